"""ROS-free conversion between `sensor_msgs/Image` / `sensor_msgs/CompressedImage` fields and RGB uint8 arrays.

The semantics follow cv_bridge (``imgmsg_to_cv2(msg, "rgb8")`` and ``cvtColorForDisplay``):

* supported raw encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` / ``8UC1``, ``mono16`` / ``16UC1``,
  ``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``; alpha is dropped, mono is replicated to three channels;
* rows may be padded: ``step`` is the length of a row in bytes (>= width * bytes per pixel), and the data must hold
  exactly ``height * step`` bytes;
* ``is_bigendian`` selects the byte order of 16-bit samples (8-bit data ignores it);
* 16-bit samples are scaled linearly to 8 bit for display, ``v8 = round(v16 * 255 / 65535)`` (cv_bridge's
  ``convertTo(..., 255.0 / 65535.0)``; ``16UC1`` depth images are shown as ``mono16``, as ``cvtColorForDisplay`` does
  without dynamic scaling).

Everything that cannot be converted raises :class:`ImageConversionError` (a ``ValueError``) naming what is wrong.
The functions take and return plain fields so the core stays free of ROS; ``actedit_ros.ros.conversions`` maps
messages onto them (and uses cv_bridge there when it is installed).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

__all__ = [
    "ImageConversionError",
    "SUPPORTED_ENCODINGS",
    "check_image_fields",
    "image_to_rgb",
    "rgb_to_image_fields",
    "compressed_to_rgb",
    "rgb_to_compressed",
    "limit_image_side",
    "scale_16_to_8",
]


class ImageConversionError(ValueError):
    """An image message that cannot be converted (unsupported encoding, inconsistent sizes, corrupt data)."""


@dataclass(frozen=True)
class _Layout:
    channels: int  # samples per pixel
    bytes_per_sample: int  # 1 or 2
    to_rgb: tuple[int, ...]  # channel indices that give R, G, B (all 0 for mono)


SUPPORTED_ENCODINGS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, (0, 1, 2)),
    "bgr8": _Layout(3, 1, (2, 1, 0)),
    "rgba8": _Layout(4, 1, (0, 1, 2)),
    "bgra8": _Layout(4, 1, (2, 1, 0)),
    "mono8": _Layout(1, 1, (0, 0, 0)),
    "8UC1": _Layout(1, 1, (0, 0, 0)),
    "mono16": _Layout(1, 2, (0, 0, 0)),
    "16UC1": _Layout(1, 2, (0, 0, 0)),
    "rgb16": _Layout(3, 2, (0, 1, 2)),
    "bgr16": _Layout(3, 2, (2, 1, 0)),
    "rgba16": _Layout(4, 2, (0, 1, 2)),
    "bgra16": _Layout(4, 2, (2, 1, 0)),
}

# Encodings rgb_to_image_fields can write (all 8-bit plus mono16).
_OUTPUT_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")


def _as_bytes_array(data, what: str) -> np.ndarray:
    """A flat uint8 view of bytes / bytearray / array.array('B') / memoryview / ndarray / list of ints."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as err:
            raise ImageConversionError(f"{what} must be bytes or a sequence of uint8, got {type(data).__name__}") from err


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 -> 8 bit display scaling, ``round(v * 255 / 65535)`` (= ``round(v / 257)``), exactly."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def check_image_fields(encoding: str, height: int, width: int, step: int, data_size: int) -> _Layout:
    """Check the fields of a `sensor_msgs/Image` for consistency; raise ImageConversionError naming the problem."""
    layout = SUPPORTED_ENCODINGS.get(encoding)
    if layout is None:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image is empty (height={height}, width={width}); both must be positive")
    row_bytes = width * layout.channels * layout.bytes_per_sample
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is shorter than one row: width {width} x {layout.channels} channel(s) x "
            f"{layout.bytes_per_sample} byte(s) = {row_bytes} bytes for encoding {encoding!r}"
        )
    if data_size != height * step:
        raise ImageConversionError(
            f"image data has {data_size} bytes but height * step = {height} * {step} = {height * step} "
            f"(encoding {encoding!r}, width {width})"
        )
    return layout


def image_to_rgb(encoding: str, height: int, width: int, step: int, is_bigendian, data) -> np.ndarray:
    """Convert the fields of a `sensor_msgs/Image` to a contiguous RGB uint8 array of shape (height, width, 3).

    Raises:
        ImageConversionError: unsupported encoding, zero size, ``step`` shorter than a row, or
            ``len(data) != height * step``.
    """
    buf = _as_bytes_array(data, "image data")
    layout = check_image_fields(encoding, height, width, step, buf.size)
    height, width, step = int(height), int(width), int(step)
    row_bytes = width * layout.channels * layout.bytes_per_sample
    rows = buf.reshape(height, step)[:, :row_bytes]  # drop row padding
    if layout.bytes_per_sample == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        samples = np.ascontiguousarray(rows).view(dtype).reshape(height, width, layout.channels)
        samples = scale_16_to_8(samples)
    else:
        samples = rows.reshape(height, width, layout.channels)
    if tuple(layout.to_rgb) == (0, 1, 2) and layout.channels == 3:  # rgb8: one contiguous copy
        return np.array(samples, dtype=np.uint8, order="C")
    rgb = np.empty((height, width, 3), np.uint8)
    for out_channel, channel in enumerate(layout.to_rgb):  # per-channel copies: fancy indexing is several times slower
        rgb[:, :, out_channel] = samples[:, :, channel]
    return rgb


def _check_rgb(rgb, what: str = "image") -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"{what} must be an RGB uint8 array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageConversionError(f"{what} is empty (shape {rgb.shape})")
    return rgb


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """Fields of a `sensor_msgs/Image` (height, width, encoding, is_bigendian, step, data) holding ``rgb``.

    ``encoding`` is one of rgb8, bgr8, rgba8, bgra8 (alpha 255), mono8 (OpenCV's RGB->gray) or mono16 (gray x 257).
    Data is little-endian, unpadded (``step = width * bytes per pixel``), and ``data`` is ``bytes``.
    """
    rgb = _check_rgb(rgb)
    if encoding not in _OUTPUT_ENCODINGS:
        raise ImageConversionError(f"cannot write encoding {encoding!r}; choose one of {', '.join(_OUTPUT_ENCODINGS)}")
    if encoding == "rgb8":
        out = rgb
    elif encoding == "bgr8":
        out = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == "bgra8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == "mono8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:  # mono16
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype("<u2") * np.uint16(257)
        out = out.astype("<u2")
    out = np.ascontiguousarray(out)
    height, width = rgb.shape[:2]
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(out.nbytes // height),
        "data": out.tobytes(),
    }


def compressed_to_rgb(format: str, data) -> np.ndarray:  # noqa: A002 - the message field is called `format`
    """Decode the fields of a `sensor_msgs/CompressedImage` (JPEG or PNG) to RGB uint8.

    ``format`` may be a plain "jpeg"/"png" or image_transport's "rgb8; jpeg compressed bgr8"; the codec is read
    from the data itself, like cv_bridge does. 16-bit PNGs are scaled to 8 bit as above. ``compressedDepth``
    (the depth-image transport with its own header) is not supported. A JPEG that is truncated or corrupt inside
    (even one that keeps its end marker) raises instead of decoding to a partly gray picture, and prints nothing.
    """
    fmt = (format or "").lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(f"compressed format {format!r} (compressedDepth) is not supported; send jpeg or png")
    buf = _as_bytes_array(data, "compressed image data")
    if buf.size == 0:
        raise ImageConversionError(f"compressed image ({format!r}) has no data")
    if buf.size >= 2 and buf[0] == 0xFF and buf[1] == 0xD8:
        return _decode_jpeg(buf, format)
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageConversionError(
            f"could not decode compressed image ({format!r}, {buf.size} bytes): corrupt or not JPEG/PNG"
        )
    if decoded.dtype == np.uint16:
        decoded = scale_16_to_8(decoded)
    elif decoded.dtype != np.uint8:
        raise ImageConversionError(f"compressed image decodes to unsupported sample type {decoded.dtype}")
    if decoded.ndim == 2 or decoded.shape[2] == 1:
        return cv2.cvtColor(decoded.reshape(decoded.shape[:2]), cv2.COLOR_GRAY2RGB)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _decode_jpeg(buf: np.ndarray, format: str) -> np.ndarray:  # noqa: A002
    """RGB uint8 from JPEG data, refusing any data libjpeg(-turbo) finds corrupt.

    libjpeg treats most corruption inside the compressed data (bad Huffman codes, a scan that ends early, stray
    markers) as a *warning*: it fills in gray, prints a line to stderr and succeeds, and OpenCV's ``imdecode`` offers
    no way to see or stop that. simplejpeg's strict mode (TurboJPEG's stop-on-warning) turns each such warning into
    an error and prints nothing; for intact data its pixels are identical to OpenCV's (same libjpeg-turbo,
    ``test/test_image_conversion.py``).
    """
    what = f"compressed image ({format!r}, {buf.size} bytes)"
    tail = buf[max(0, buf.size - 64):]
    tail = tail[: np.flatnonzero(tail).max() + 1] if tail.any() else tail
    if tail.size < 2 or tail[-2] != 0xFF or tail[-1] != 0xD9:
        raise ImageConversionError(f"corrupt JPEG in {what}: no end-of-image marker (truncated?)")
    data = buf.tobytes()
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
    except ValueError as err:
        raise ImageConversionError(f"could not decode {what}: corrupt or not JPEG/PNG ({err})") from err
    if colorspace == "CMYK":
        raise ImageConversionError(f"{what} is a CMYK JPEG; send RGB, YCbCr or grayscale JPEG, or PNG")
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as err:
        raise ImageConversionError(f"corrupt JPEG in {what}: {err}") from err


def rgb_to_compressed(rgb: np.ndarray, format: str = "jpeg", quality: int = 90) -> dict:  # noqa: A002
    """Fields (format, data) of a `sensor_msgs/CompressedImage` holding ``rgb`` as JPEG or PNG.

    ``format`` follows image_transport's convention, e.g. "rgb8; jpeg compressed bgr8".
    """
    rgb = _check_rgb(rgb)
    codec = format.lower()
    if codec in ("jpeg", "jpg"):
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        codec = "jpeg"
    elif codec == "png":
        ext, params = ".png", []
    else:
        raise ImageConversionError(f"cannot compress to {format!r}; choose 'jpeg' or 'png'")
    ok, encoded = cv2.imencode(ext, rgb[:, :, ::-1], params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {rgb.shape} image as {codec}")
    return {"format": f"rgb8; {codec} compressed bgr8", "data": encoded.tobytes()}


def limit_image_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale ``rgb`` (area interpolation, aspect kept) so its longer side is at most ``max_side`` pixels.

    Returns the input unchanged when it is already small enough or ``max_side <= 0`` (no limit).
    """
    height, width = rgb.shape[:2]
    longer = max(height, width)
    if max_side <= 0 or longer <= max_side:
        return rgb
    scale = max_side / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

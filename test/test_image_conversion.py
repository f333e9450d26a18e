"""actedit_ros.image_conversion against an independent implementation (rosbags-image) and its error contract."""
import cv2
import numpy as np
import pytest
from jpeg_corruption import corrupt_inside, good_jpeg, scene
from rosbags.image import compressed_image_to_cvimage, image_to_cvimage
from rosbags.typesys import Stores, get_typestore

from actedit_ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    limit_image_side,
    rgb_to_compressed,
    rgb_to_image_fields,
)

TYPES = get_typestore(Stores.LATEST).types
RosbagsImage = TYPES["sensor_msgs/msg/Image"]
RosbagsCompressed = TYPES["sensor_msgs/msg/CompressedImage"]
Header = TYPES["std_msgs/msg/Header"]
Time = TYPES["builtin_interfaces/msg/Time"]

# encoding -> (numpy sample type, channels)
ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "rgb16": (np.uint16, 3),
    "bgr16": (np.uint16, 3),
    "rgba16": (np.uint16, 4),
    "bgra16": (np.uint16, 4),
}


def make_samples(encoding, height=5, width=7, seed=0):
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, size=(height, width, channels), endpoint=True, dtype=dtype)


def pack(samples, bigendian=False, padding=0):
    """Row bytes of `samples` in the requested byte order, each row followed by `padding` junk bytes."""
    order = ">" if bigendian else "<"
    raw = samples.astype(samples.dtype.newbyteorder(order)).reshape(samples.shape[0], -1).view(np.uint8)
    pad = np.full((samples.shape[0], padding), 0xAB, np.uint8)
    rows = np.concatenate([raw, pad], axis=1)
    return rows.shape[1], rows.tobytes()


def rosbags_msg(encoding, samples, bigendian):
    step, data = pack(samples, bigendian)
    return RosbagsImage(
        header=Header(stamp=Time(sec=0, nanosec=0), frame_id="cam"),
        height=samples.shape[0], width=samples.shape[1], encoding=encoding,
        is_bigendian=int(bigendian), step=step, data=np.frombuffer(data, np.uint8),
    )


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_image_to_rgb_matches_rosbags_image(encoding, bigendian, padding):
    samples = make_samples(encoding)
    step, data = pack(samples, bigendian, padding)
    ours = image_to_rgb(encoding, samples.shape[0], samples.shape[1], step, bigendian, data)
    assert ours.dtype == np.uint8 and ours.shape == (5, 7, 3) and ours.flags["C_CONTIGUOUS"]

    # rosbags-image reads rows unpadded; give it the same pixels without padding.
    msg = rosbags_msg(encoding, samples, bigendian)
    theirs = image_to_cvimage(msg, "rgb8")
    if samples.dtype == np.uint8:
        np.testing.assert_array_equal(ours, theirs)
    else:
        # rosbags truncates 16 -> 8 bit, cv_bridge (and we) round: equal up to 1, and exactly round(v / 257)
        # of rosbags' own decoding of the 16-bit samples (which checks byte order and channel order).
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
        raw16 = image_to_cvimage(msg, "rgb16").astype(np.float64)
        np.testing.assert_array_equal(ours, np.rint(raw16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize("bigendian", [False, True])
def test_16uc1_is_shown_like_mono16(bigendian):
    samples = make_samples("mono16", seed=3)
    step, data = pack(samples, bigendian, padding=2)
    depth = image_to_rgb("16UC1", 5, 7, step, bigendian, data)
    raw = image_to_cvimage(rosbags_msg("16UC1", samples, bigendian))  # rosbags: native uint16, no conversion
    np.testing.assert_array_equal(depth[:, :, 0], np.rint(raw.astype(np.float64) / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(depth, image_to_rgb("mono16", 5, 7, step, bigendian, data))


def test_16_bit_scaling_endpoints():
    values = np.array([[[0], [128], [129], [65535]]], np.uint16)
    step, data = pack(values)
    assert image_to_rgb("mono16", 1, 4, step, False, data)[0, :, 0].tolist() == [0, 0, 1, 255]


def test_data_types_accepted():
    import array

    samples = make_samples("rgb8")
    step, data = pack(samples)
    expected = image_to_rgb("rgb8", 5, 7, step, False, data)
    for variant in (bytearray(data), array.array("B", data), memoryview(data), np.frombuffer(data, np.uint8), list(data)):
        np.testing.assert_array_equal(image_to_rgb("rgb8", 5, 7, step, False, variant), expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_rgb_to_image_fields_round_trip(encoding):
    rgb = make_samples("rgb8", 6, 9, seed=1)
    if encoding.startswith("mono"):
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)  # gray survives a mono round trip exactly
    fields = rgb_to_image_fields(rgb, encoding)
    assert fields["encoding"] == encoding and (fields["height"], fields["width"]) == (6, 9)
    assert len(fields["data"]) == fields["height"] * fields["step"]
    back = image_to_rgb(fields["encoding"], fields["height"], fields["width"], fields["step"],
                        fields["is_bigendian"], fields["data"])
    np.testing.assert_array_equal(back, rgb)
    # and rosbags-image reads what we write
    msg = RosbagsImage(header=Header(stamp=Time(sec=0, nanosec=0), frame_id=""), **{
        **fields, "data": np.frombuffer(fields["data"], np.uint8)})
    np.testing.assert_array_equal(image_to_cvimage(msg, "rgb8"), rgb)


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_compressed_round_trip_and_rosbags(codec):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:20, :30] = (220, 30, 30)
    rgb[20:, 30:] = (30, 200, 60)
    fields = rgb_to_compressed(rgb, codec)
    assert fields["format"] == f"rgb8; {codec} compressed bgr8"
    ours = compressed_to_rgb(fields["format"], fields["data"])
    theirs = compressed_image_to_cvimage(
        RosbagsCompressed(header=Header(stamp=Time(sec=0, nanosec=0), frame_id=""), format=fields["format"],
                          data=np.frombuffer(fields["data"], np.uint8)), "rgb8")
    np.testing.assert_array_equal(ours, theirs)
    tolerance = 0 if codec == "png" else 12
    assert np.abs(ours.astype(int) - rgb.astype(int)).mean() <= tolerance


def test_compressed_gray_and_16_bit_png():
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    ok, png = cv2.imencode(".png", gray16)
    assert ok
    rgb = compressed_to_rgb("png", png.tobytes())
    np.testing.assert_array_equal(rgb[:, :, 1], np.rint(gray16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize(
    "fields, match",
    [
        (("yuv422", 2, 2, 4, 0, bytes(8)), "unsupported image encoding 'yuv422'"),
        (("", 2, 2, 6, 0, bytes(12)), "unsupported image encoding ''"),
        (("rgb8", 0, 0, 0, 0, b""), r"empty \(height=0, width=0\)"),
        (("rgb8", 4, 0, 0, 0, b""), "empty"),
        (("rgb8", 2, 2, 6, 0, bytes(11)), r"11 bytes but height \* step = 2 \* 6 = 12"),
        (("rgb8", 2, 2, 6, 0, bytes(13)), "13 bytes"),
        (("rgb8", 2, 2, 5, 0, bytes(10)), "step 5 is shorter than one row"),
        (("mono16", 2, 2, 3, 1, bytes(6)), "step 3 is shorter"),
    ],
)
def test_bad_images_raise_clear_errors(fields, match):
    with pytest.raises(ImageConversionError, match=match):
        image_to_rgb(*fields)
    assert issubclass(ImageConversionError, ValueError)


def test_corrupt_compressed_images_raise():
    good = rgb_to_compressed(make_samples("rgb8", 32, 32), "jpeg")["data"]
    with pytest.raises(ImageConversionError, match="corrupt JPEG"):
        compressed_to_rgb("jpeg", good[: len(good) - 10])  # truncated: decoders would fill it with gray
    with pytest.raises(ImageConversionError, match="could not decode"):
        compressed_to_rgb("jpeg", b"\x00\x01garbage" * 50)
    with pytest.raises(ImageConversionError, match="could not decode"):
        compressed_to_rgb("jpeg", good[:2] + bytes(200) + good[-2:])
    with pytest.raises(ImageConversionError, match="no data"):
        compressed_to_rgb("jpeg", b"")
    with pytest.raises(ImageConversionError, match="compressedDepth"):
        compressed_to_rgb("16UC1; compressedDepth png", good)


def test_rgb_input_checked():
    with pytest.raises(ImageConversionError, match=r"shape \(H, W, 3\)"):
        rgb_to_image_fields(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageConversionError, match="uint8"):
        rgb_to_compressed(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageConversionError, match="cannot write encoding"):
        rgb_to_image_fields(np.zeros((4, 4, 3), np.uint8), "yuv422")


def test_large_image_is_converted_and_downscaled():
    # 8000x8000 is accepted by conversion (mono8: 64 MB); the node then limits the longer side.
    data = np.zeros((8000, 8000), np.uint8)
    data[:, 4000:] = 255
    rgb = image_to_rgb("mono8", 8000, 8000, 8000, False, memoryview(data).cast("B"))
    assert rgb.shape == (8000, 8000, 3)
    small = limit_image_side(rgb, 1024)
    assert small.shape == (1024, 1024, 3)
    assert small[:, :500].max() == 0 and small[:, 524:].min() == 255
    assert limit_image_side(rgb[:300, :200], 1024).shape == (300, 200, 3)
    assert limit_image_side(rgb[:100, :4000], 1000).shape == (25, 1000, 3)



@pytest.mark.parametrize("kind", ["bytes lost", "stray marker"])
def test_jpeg_corrupt_inside_with_end_marker_raises_quietly(kind, capfd):
    """libjpeg only warns about these (and OpenCV decodes them, partly gray, printing a line to stderr each time)."""
    bad = corrupt_inside(good_jpeg(scene(1)), kind)
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # OpenCV lets it through
    capfd.readouterr()
    with pytest.raises(ImageConversionError, match="corrupt JPEG in compressed image .*Corrupt JPEG data"):
        compressed_to_rgb("rgb8; jpeg compressed bgr8", bad)
    assert capfd.readouterr().err == ""  # nothing from libjpeg on stderr


@pytest.mark.parametrize("variant", ["color", "gray", "progressive", "odd size"])
def test_jpeg_decodes_exactly_like_opencv(variant):
    rgb = scene(2, (161, 97)) if variant == "odd size" else scene(2)
    if variant == "gray":
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    else:
        flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if variant == "progressive" else []
        ok, encoded = cv2.imencode(".jpg", rgb[:, :, ::-1], flags)
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    expected = cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB if decoded.ndim == 2 else cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(compressed_to_rgb("jpeg", encoded.tobytes()), expected)

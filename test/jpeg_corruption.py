"""JPEGs that are corrupt inside but keep their start and end markers (ROS-free test helper).

libjpeg decodes each of these "successfully" with a warning on stderr (checked in test_image_conversion.py), so a
decoder that only checks markers, or OpenCV's imdecode, would let them through.
"""
import cv2
import numpy as np


def scene(seed=0, size=(160, 120)) -> np.ndarray:
    """A blocky RGB test picture, different per seed (compresses to a few KB of scan data)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return np.kron(small, np.ones((size[1] // 6, size[0] // 8, 1), np.uint8))


def good_jpeg(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def corrupt_inside(jpeg: bytes, kind: str) -> bytes:
    """``jpeg`` damaged in the middle of its scan data; SOI and EOI markers kept."""
    data = bytearray(jpeg)
    scan = data.find(b"\xff\xda")
    assert scan > 0 and data[-2:] == b"\xff\xd9"
    middle = (scan + len(data)) // 2
    if kind == "bytes lost":  # a chunk of the stream went missing in transit
        del data[middle:middle + 200]
    elif kind == "stray marker":  # a restart marker where none belongs: the scan ends early
        data[middle:middle + 1] = b"\xff\xd0"
    else:
        raise ValueError(kind)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    return bytes(data)

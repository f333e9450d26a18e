"""Thin helpers between sensor_msgs messages and the ROS-free converters in :mod:`actedit_ros.image_conversion`.

Raw images go through ROS 2 cv_bridge when it is installed (a normal ROS install) and through the project's
NumPy converter otherwise (the PyPI wheels have no cv_bridge); both follow the same semantics and the same checks
run first, so a bad message raises the same :class:`ImageConversionError` either way.
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from actedit_ros.image_conversion import (
    ImageConversionError,
    check_image_fields,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)

try:  # ROS 2 cv_bridge (not on PyPI; PyPI's `cv-bridge` is the ROS 1 one and is not used)
    from cv_bridge import CvBridge, CvBridgeError

    _BRIDGE = CvBridge()
except ImportError:  # pragma: no cover - depends on the installation
    _BRIDGE = None

# Encodings cv_bridge converts to rgb8 itself; everything else (16UC1, 8UC1) uses the NumPy path.
_BRIDGE_ENCODINGS = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "bgr16", "rgba16", "bgra16"}


def using_cv_bridge() -> bool:
    return _BRIDGE is not None


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """RGB uint8 (height, width, 3) from a `sensor_msgs/Image`; raises ImageConversionError on bad input."""
    if _BRIDGE is not None and msg.encoding in _BRIDGE_ENCODINGS:  # pragma: no cover - needs ROS 2 cv_bridge
        check_image_fields(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except CvBridgeError as err:
            raise ImageConversionError(f"cv_bridge could not convert the {msg.encoding!r} image: {err}") from err
    return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """RGB uint8 from a `sensor_msgs/CompressedImage` (JPEG or PNG)."""
    return compressed_to_rgb(msg.format, msg.data)


def rgb_to_image_msg(rgb: np.ndarray, header: Header | None = None, encoding: str = "rgb8") -> Image:
    """A `sensor_msgs/Image` holding ``rgb`` (unpadded, little-endian)."""
    msg = Image(**rgb_to_image_fields(rgb, encoding))
    if header is not None:
        msg.header = header
    return msg


def rgb_to_compressed_msg(rgb: np.ndarray, header: Header | None = None, format: str = "jpeg") -> CompressedImage:  # noqa: A002
    """A `sensor_msgs/CompressedImage` holding ``rgb`` as JPEG or PNG."""
    msg = CompressedImage(**rgb_to_compressed(rgb, format))
    if header is not None:
        msg.header = header
    return msg


def image_msg_is_empty(msg: Image) -> bool:
    """True for a default-constructed Image (no encoding, no size, no data): 'no image given'."""
    return msg.encoding == "" and msg.height == 0 and msg.width == 0 and len(msg.data) == 0


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9

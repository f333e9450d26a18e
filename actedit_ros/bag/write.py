"""Write rosbag2 bags (sqlite3 and mcap storage) with `rosbags`, and build the messages to write.

Plain Python like `actedit_ros.bag.io` (the reading side, which also holds the type store and BagError).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys.store import Typestore

from actedit_ros.bag.io import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, STRING_TYPE, SUPPORTED_STORAGE, BagError, \
    get_bag_typestore


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


def make_qos(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """A rosbags QoS profile record, as stored in a bag's offered_qos_profiles."""
    never = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=never,
        lifespan=never,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=never,
        avoid_ros_namespace_conventions=False,
    )


class BagWriter:
    """A new rosbag2 bag (mcap by default). Use as a context manager; metadata.yaml is written on close."""

    def __init__(self, path: str | os.PathLike, storage: str = "mcap", typestore: Typestore | None = None):
        if storage not in SUPPORTED_STORAGE:
            raise BagError(f"storage {storage!r} is not supported; use one of {', '.join(SUPPORTED_STORAGE)}")
        self.path = Path(path)
        self.storage = storage
        self.typestore = typestore or get_bag_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        except WriterError as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from None
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def open(self) -> "BagWriter":
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from None
        return self

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def add_topic(self, topic: str, msgtype: str, qos: Qos | None = None) -> None:
        """Declare a topic; its message definition comes from the typestore."""
        if topic in self._connections:
            raise BagError(f"topic {topic!r} was already added to bag {self.path}")
        if msgtype not in self.typestore.fielddefs:
            raise BagError(f"cannot record {topic!r}: message type {msgtype} is unknown to the rosbags typestore")
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=[qos] if qos else ()
        )
        self.counts[topic] = 0

    def write_raw(self, topic: str, log_ns: int, rawdata: bytes | memoryview) -> None:
        """Append an already CDR-serialized message."""
        self._writer.write(self._connections[topic], int(log_ns), rawdata)
        self.counts[topic] += 1

    def write(self, topic: str, log_ns: int, msg: object) -> None:
        """Serialize a rosbags message dataclass and append it."""
        connection = self._connections[topic]
        self.write_raw(topic, log_ns, self.typestore.serialize_cdr(msg, connection.msgtype))


# -- message builders (rosbags dataclasses) -----------------------------------------------------------------------


def header_message(stamp_ns: int, frame_id: str = "camera", typestore: Typestore | None = None):
    ts = typestore or get_bag_typestore()
    time = ts.types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                 nanosec=int(stamp_ns % 1_000_000_000))
    return ts.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def image_message(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", encoding: str = "rgb8",
                  typestore: Typestore | None = None):
    """sensor_msgs/Image from an RGB uint8 array, fields from actedit_ros.image_conversion.rgb_to_image_fields."""
    from actedit_ros.image_conversion import rgb_to_image_fields

    ts = typestore or get_bag_typestore()
    fields = dict(rgb_to_image_fields(rgb, encoding=encoding))
    fields["data"] = np.frombuffer(bytes(fields["data"]), dtype=np.uint8)
    return ts.types[IMAGE_TYPE](header=header_message(stamp_ns, frame_id, ts), **fields)


def compressed_image_message(data: bytes, image_format: str, stamp_ns: int, frame_id: str = "camera",
                             typestore: Typestore | None = None):
    """sensor_msgs/CompressedImage from already encoded bytes (e.g. cv2.imencode output) and its format string."""
    ts = typestore or get_bag_typestore()
    return ts.types[COMPRESSED_IMAGE_TYPE](header=header_message(stamp_ns, frame_id, ts), format=image_format,
                                           data=np.frombuffer(bytes(data), dtype=np.uint8))


def string_message(text: str, typestore: Typestore | None = None):
    ts = typestore or get_bag_typestore()
    return ts.types[STRING_TYPE](data=text)

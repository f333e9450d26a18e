"""Read rosbag2 bags (sqlite3 and mcap storage) with `rosbags`: no ROS install needed.

Everything here is plain Python. Bad bags raise `BagError` with a message that names what is wrong; messages
that cannot be decoded are yielded as `SkippedMessage` (with the reason) so callers can count them and go on.

Times are integers in nanoseconds. A message has two times: its *log time* (when the recorder received it; what
`ros2 bag` orders and filters by) and, for messages with a header, its *stamp* (when the sensor captured it).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
STRING_TYPE = "std_msgs/msg/String"
PROGRESS_TYPE = "actedit_ros/msg/Progress"
GOAL_TYPE = "actedit_ros/msg/GoalImage"
SUPPORTED_STORAGE = ("mcap", "sqlite3")
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
ROS_TYPESTORE = Stores.ROS2_KILTED
ACTEDIT_MSG_NAMES = ("GoalImage", "Progress")


class BagError(Exception):
    """A bag that cannot be read or written; the message says which bag and what is wrong."""


# ----------------------------------------------------------------------------------------------------------------
# Type store: the ROS 2 Kilted message types plus this package's own messages (parsed from msg/*.msg).
# ----------------------------------------------------------------------------------------------------------------


def find_actedit_msg_dir() -> Path | None:
    """The folder holding this package's .msg files: the source checkout's msg/, else an ament install's share."""
    candidates = []
    if root := os.environ.get("ACTEDIT_ROOT"):
        candidates.append(Path(root) / "msg")
    candidates.append(Path(__file__).resolve().parents[2] / "msg")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "actedit_ros" / "msg")
    for folder in candidates:
        if all((folder / f"{name}.msg").is_file() for name in ACTEDIT_MSG_NAMES):
            return folder
    return None


@lru_cache(maxsize=1)
def get_bag_typestore() -> Typestore:
    """A rosbags typestore with the ROS 2 Kilted types and `actedit_ros/msg/*` (when their .msg files are found)."""
    typestore = get_typestore(ROS_TYPESTORE)
    msg_dir = find_actedit_msg_dir()
    if msg_dir is not None:
        types = {}
        for name in ACTEDIT_MSG_NAMES:
            types.update(get_types_from_msg((msg_dir / f"{name}.msg").read_text(), f"actedit_ros/msg/{name}"))
        typestore.register(types)
    return typestore


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSummary:
    """One topic of a bag: its name, message type and number of messages."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagMessage:
    """One raw (CDR-serialized) message as stored in the bag."""

    topic: str
    msgtype: str
    log_ns: int
    rawdata: bytes


@dataclass
class BagFrame:
    """One decoded camera frame."""

    topic: str
    log_ns: int
    stamp_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8


@dataclass
class SkippedMessage:
    """A message that was read but could not be decoded; `reason` says why."""

    topic: str
    log_ns: int
    reason: str


INLINE_TOPICS = 3  # more topics than this are listed one per line


def _format_lines(items: list[str]) -> str:
    """A few items inline ('a, b'); more than INLINE_TOPICS one per line, indented, starting on a new line."""
    if len(items) > INLINE_TOPICS:
        return "\n" + "\n".join(f"  {item}" for item in items)
    return ", ".join(items) if items else "none"


def _format_topics(topics: Iterable[TopicSummary]) -> str:
    return _format_lines([f"{t.name} ({t.msgtype}, {t.count} messages)" for t in topics])


def _summarize(connections) -> dict[str, TopicSummary]:
    """TopicSummary per topic of rosbags connections (counts summed over connections and storage files)."""
    topics: dict[str, TopicSummary] = {}
    for connection in sorted(connections, key=lambda c: c.topic):
        name, before = connection.topic, topics.get(connection.topic)
        msgtype = connection.msgtype if before is None or before.msgtype == connection.msgtype else "mixed types"
        topics[name] = TopicSummary(name, msgtype, connection.msgcount + (before.count if before else 0))
    return topics


def _compare_listing(meta_path: Path, listed: dict[str, TopicSummary], held: dict[str, TopicSummary],
                     listed_connections, held_connections) -> list[str]:
    """Notes on where metadata.yaml's topics, counts or QoS differ from what the storage files hold."""
    notes = []
    for name in sorted(set(listed) | set(held)):
        count_held = held[name].count if name in held else 0
        if name not in listed:
            notes.append(f"{meta_path} does not list topic {name}, of which its storage holds {count_held} "
                         f"messages; they are read")
        elif listed[name].count != count_held:
            notes.append(f"{meta_path} lists {listed[name].count} messages on {name}, its storage holds "
                         f"{count_held}; the storage's messages are read")
    qos_listed = {c.topic: c.ext for c in listed_connections}
    differ = sorted({c.topic for c in held_connections if c.topic in qos_listed and c.ext != qos_listed[c.topic]})
    if differ:
        notes.append(f"{meta_path} records other QoS profiles than its storage for {', '.join(differ)}; "
                     f"messages are matched by topic and type, and its profiles are used for playback")
    return notes


def _read_metadata(path: Path) -> dict:
    """The `rosbag2_bagfile_information` mapping of a bag directory, checked for the storage identifier."""
    meta_path = path / "metadata.yaml"
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BagError(f"cannot read bag metadata {meta_path}: {exc}") from None
    info = meta.get("rosbag2_bagfile_information") if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        raise BagError(f"{meta_path} is not rosbag2 metadata: it has no 'rosbag2_bagfile_information' mapping")
    storage = info.get("storage_identifier")
    files = [str(f) for f in info.get("relative_file_paths") or []]
    if storage is None or str(storage).strip() == "":
        guesses = sorted({STORAGE_SUFFIXES[Path(f).suffix] for f in files if Path(f).suffix in STORAGE_SUFFIXES})
        hint = f" (its storage file {files[0]!r} suggests {guesses[0]!r})" if len(guesses) == 1 and files else ""
        raise BagError(
            f"{meta_path} has an empty storage_identifier; it must name the storage plugin, "
            f"one of {', '.join(SUPPORTED_STORAGE)}{hint}"
        )
    if storage not in SUPPORTED_STORAGE:
        raise BagError(
            f"{meta_path} names storage plugin {storage!r}, which is not supported; "
            f"bags must use one of: {', '.join(SUPPORTED_STORAGE)}"
        )
    return info


def _storage_file(path: Path, suffix: str) -> Path:
    """The storage file a message should name: `path` itself, or the bag directory's only file with `suffix`."""
    if path.is_dir():
        found = sorted(path.glob(f"*{suffix}"))
        return found[0] if len(found) == 1 else path / f"<storage file>{suffix}"
    return path


def _explain_reader_error(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "end magic" in text or "Invalid MCAP footer" in text:
        file = _storage_file(path, ".mcap")
        return (f"bag {path} is truncated: its MCAP file has no valid footer, so the recording was cut off "
                f"before it was closed ({text}). To recover the messages it holds, run the MCAP command-line "
                f"tool (https://mcap.dev/guides/cli): mcap recover {file} -o {file.with_suffix('.recovered.mcap')} "
                f"and pass the recovered file instead")
    if "seems to be empty" in text:
        return f"bag {path} is truncated: its storage file is empty, so it holds nothing to recover ({text})"
    if "malformed" in text or "missing tables" in text or "not a database" in text:
        return f"bag {path} is truncated or corrupt: its sqlite3 database cannot be read ({text})"
    if "magic is invalid" in text:
        return f"bag {path} is not a valid MCAP file ({text})"
    return f"cannot read bag {path}: {text}"


class BagReader:
    """A rosbag2 bag opened for reading: a directory with metadata.yaml, or a single .mcap / .db3 storage file.

    A directory without metadata.yaml but with exactly one storage file (an interrupted recording) is read from
    that file; `notes` says so. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.notes: list[str] = []
        self.storage = self._check_path()
        self._reader: Reader | None = None
        self.typestore = get_bag_typestore()

    def _check_path(self) -> str:
        path = self.path
        if not path.exists():
            raise BagError(f"bag not found: {path} does not exist")
        if path.is_file():
            if path.name == "metadata.yaml":
                self.path = path.parent
                return self._check_path()
            if path.suffix not in STORAGE_SUFFIXES:
                raise BagError(f"{path} is not a rosbag2 bag: expected a bag directory (with metadata.yaml) "
                               f"or a storage file ending in {', '.join(STORAGE_SUFFIXES)}")
            return STORAGE_SUFFIXES[path.suffix]
        if (path / "metadata.yaml").is_file():
            return str(_read_metadata(path)["storage_identifier"])
        storage_files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if len(storage_files) == 1:
            self.notes.append(f"{path} has no metadata.yaml; read its storage file {storage_files[0].name} directly")
            self.path = storage_files[0]
            return STORAGE_SUFFIXES[storage_files[0].suffix]
        found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise BagError(f"{path} is not a rosbag2 bag directory: it has no metadata.yaml (it holds: {found})")

    # -- lifetime -------------------------------------------------------------------------------------------------
    def open(self) -> "BagReader":
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as exc:  # noqa: BLE001 - storage back ends (apsw, mcap parsing) raise their own types
            raise BagError(_explain_reader_error(self.path, exc)) from None
        self._reader = reader
        self._index_storage()
        return self

    def _index_storage(self) -> None:
        """Topics, counts and times from the storage files themselves, checked against metadata.yaml's listing.

        rosbags matches metadata.yaml's topics to the storage file's by topic, type *and* offered QoS profiles;
        where the profiles differ (rosbag2's own metadata-version-4 bags) it yields nothing for those topics.
        This reader reads the storage's own connections instead, so it gets every message the storage holds.
        """
        reader = self.reader
        storages = getattr(reader.storage, "storages", None) or [reader.storage]
        self._connections = [c for storage in storages for c in storage.connections]
        held = [s.metadata for s in storages if s.metadata.message_count]
        self._start_ns = min((m.start_time for m in held), default=0)
        self._end_ns = max((m.end_time for m in held), default=0)
        self._topics = _summarize(self._connections)
        if reader.storage is not storages[0]:  # a directory: compare with what its metadata.yaml lists
            self.notes += _compare_listing(self.path / "metadata.yaml", _summarize(reader.connections),
                                           self._topics, reader.connections, self._connections)

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __enter__(self) -> "BagReader":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            raise BagError(f"bag {self.path} is not open")
        return self._reader

    # -- contents -------------------------------------------------------------------------------------------------
    @property
    def start_ns(self) -> int:
        """Log time of the first message the storage holds (0 for an empty bag)."""
        self.reader  # noqa: B018 - raises when not open
        return self._start_ns

    @property
    def end_ns(self) -> int:
        """Log time just after the last message the storage holds (0 for an empty bag)."""
        self.reader  # noqa: B018 - raises when not open
        return self._end_ns

    @property
    def topics(self) -> dict[str, TopicSummary]:
        """Every topic of the storage files, with the number of messages they hold."""
        self.reader  # noqa: B018 - raises when not open
        return dict(self._topics)

    def offered_qos(self, topic: str) -> list:
        """The QoS profiles recorded for `topic` (rosbags `Qos`): metadata.yaml's, else the storage file's."""
        listed = [c for c in self.reader.connections if c.topic == topic]
        for connection in listed + [c for c in self._connections if c.topic == topic]:
            if profiles := getattr(connection.ext, "offered_qos_profiles", None):
                return list(profiles)
        return []

    def topics_of_type(self, msgtypes: Iterable[str]) -> list[str]:
        wanted = set(msgtypes)
        return sorted(t.name for t in self.topics.values() if t.msgtype in wanted)

    def describe_topics(self) -> str:
        return _format_topics(self.topics.values())

    def image_topic(self, requested: str | None = None, option: str = "--camera-topic") -> str:
        """The camera topic: `requested` (checked), else the bag's only Image/CompressedImage topic.

        `option` is the command-line flag that chooses it, named in the error when the bag has several.
        """
        topics = self.topics
        if requested:
            if requested not in topics:
                raise BagError(f"topic {requested!r} is not in bag {self.path}; its topics: {self.describe_topics()}")
            if topics[requested].msgtype not in IMAGE_TYPES:
                raise BagError(f"topic {requested!r} in bag {self.path} has type {topics[requested].msgtype}, "
                               f"not {' or '.join(IMAGE_TYPES)}")
            return requested
        image_topics = self.topics_of_type(IMAGE_TYPES)
        if not image_topics:
            raise BagError(f"bag {self.path} has no image topic ({' or '.join(IMAGE_TYPES)}); "
                           f"its topics: {self.describe_topics()}")
        if len(image_topics) > 1:
            raise BagError(f"bag {self.path} has {len(image_topics)} image topics ({_format_lines(image_topics)}); "
                           f"choose one with {option}")
        return image_topics[0]

    def string_topic(self, requested: str | None = None, option: str = "--instruction-topic") -> str | None:
        """An instruction topic: `requested` (checked), else the bag's only std_msgs/String topic, else None."""
        return self.single_topic(STRING_TYPE, requested, option=option, required=False)

    def single_topic(self, msgtype: str, requested: str | None = None, option: str = "--topic",
                     required: bool = True) -> str | None:
        """`requested` (checked to have `msgtype`), else the bag's only topic of `msgtype`.

        Without a request, no such topic gives None when not `required`; several always raise.
        """
        topics = self.topics
        if requested:
            if requested not in topics:
                raise BagError(f"topic {requested!r} is not in bag {self.path}; its topics: {self.describe_topics()}")
            if topics[requested].msgtype != msgtype:
                raise BagError(f"topic {requested!r} in bag {self.path} has type {topics[requested].msgtype}, "
                               f"not {msgtype}")
            return requested
        found = self.topics_of_type([msgtype])
        if len(found) > 1:
            raise BagError(f"bag {self.path} has {len(found)} {msgtype} topics ({_format_lines(found)}); "
                           f"choose one with {option}")
        if not found and required:
            raise BagError(f"bag {self.path} has no {msgtype} topic; its topics: {self.describe_topics()}")
        return found[0] if found else None

    def messages(self, topics: Iterable[str] = (), start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Raw messages of `topics` (all when empty) with start_ns <= log time < stop_ns, in log-time order.

        Storage errors in the middle of the bag (a corrupt file) raise `BagError`; messages already yielded stay valid.
        """
        wanted = set(topics)
        missing = wanted - set(self.topics)
        if missing:
            raise BagError(f"topics {sorted(missing)} are not in bag {self.path}; its topics: {self.describe_topics()}")
        connections = [c for c in self._connections if not wanted or c.topic in wanted]
        if not connections:  # rosbags reads *every* connection when given none
            return
        whole = (start_ns is None or start_ns <= self.start_ns) and (stop_ns is None or stop_ns >= self.end_ns)
        read: Counter = Counter()
        try:
            for connection, log_ns, rawdata in self.reader.messages(connections, start=start_ns, stop=stop_ns):
                read[connection.topic] += 1
                yield BagMessage(connection.topic, connection.msgtype, log_ns, bytes(rawdata))
        except Exception as exc:  # noqa: BLE001 - only the storage back end runs inside this try
            raise BagError(f"bag {self.path} is corrupt: reading stopped after {sum(read.values())} messages "
                           f"({type(exc).__name__}: {exc})") from None
        if whole:
            self._check_read_counts(read, wanted or set(self.topics))

    def _check_read_counts(self, read: Counter, topics: Iterable[str]) -> None:
        """After a whole-bag read: raise when fewer messages came out than the storage says it holds."""
        short = [f"{topic}: {read[topic]} of {self._topics[topic].count}" for topic in sorted(topics)
                 if read[topic] < self._topics[topic].count]
        if short:
            raise BagError(f"bag {self.path}: reading yielded fewer messages than its storage holds "
                           f"({'; '.join(short)}): its index promises messages its data does not hold, so the "
                           f"storage file is incomplete or damaged")

    def deserialize(self, message: BagMessage) -> object:
        """The message as a rosbags dataclass; raises `BagError` when its bytes do not decode."""
        try:
            return self.typestore.deserialize_cdr(message.rawdata, message.msgtype)
        except TypesysError as exc:
            raise BagError(f"message type {message.msgtype} of topic {message.topic} is unknown: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - corrupt bytes raise anything from struct/numpy/index errors
            raise BagError(f"{message.msgtype} bytes do not decode ({type(exc).__name__}: {exc})") from None

    def frames(self, topic: str, start_ns: int | None = None,
               stop_ns: int | None = None) -> Iterator[BagFrame | SkippedMessage]:
        """Decoded RGB frames of an Image/CompressedImage topic; undecodable messages come as `SkippedMessage`."""
        for message in self.messages([topic], start_ns, stop_ns):
            try:
                msg = self.deserialize(message)
                rgb = image_message_to_rgb(msg, message.msgtype)
            except (BagError, ValueError) as exc:
                yield SkippedMessage(topic, message.log_ns, str(exc))
                continue
            yield BagFrame(topic, message.log_ns, stamp_to_ns(msg.header.stamp), rgb)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_message_to_rgb(msg, msgtype: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a deserialized Image or CompressedImage (conversion in actedit_ros.image_conversion).

    Raises `ValueError` (ImageConversionError is one) when the data does not match its header or cannot be decoded.
    """
    from actedit_ros.image_conversion import compressed_to_rgb, image_to_rgb

    if msgtype == IMAGE_TYPE:
        return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return compressed_to_rgb(msg.format, msg.data)
    raise ValueError(f"{msgtype} is not an image message type ({' or '.join(IMAGE_TYPES)})")

"""rosbag2 tools without ROS: read/write bags with rosbags, episodes of a bag, and offline replay evaluation.

Modules: `io` reads bags (and holds the type store), `write` writes them, `episodes` cuts a bag into episodes,
`synthetic` writes bags from the synthetic world. `eval_bag` is the `actedit-eval-bag` command line, `evaluation`
its scoring pass and `eval_report` its CSV, figures and summary. The live tools that need rclpy
(`actedit-play-bag`, `actedit-record-bag`) live in `actedit_ros.ros`.
"""
from actedit_ros.bag.episodes import BagEpisode, EpisodeError, episodes_from_instructions, load_episode_file
from actedit_ros.bag.io import (
    COMPRESSED_IMAGE_TYPE,
    GOAL_TYPE,
    IMAGE_TYPE,
    IMAGE_TYPES,
    PROGRESS_TYPE,
    STRING_TYPE,
    BagError,
    BagFrame,
    BagMessage,
    BagReader,
    SkippedMessage,
    get_bag_typestore,
)
from actedit_ros.bag.write import BagWriter, compressed_image_message, header_message, image_message, make_qos, \
    string_message

__all__ = [
    "COMPRESSED_IMAGE_TYPE",
    "GOAL_TYPE",
    "IMAGE_TYPE",
    "IMAGE_TYPES",
    "PROGRESS_TYPE",
    "STRING_TYPE",
    "BagEpisode",
    "BagError",
    "BagFrame",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "EpisodeError",
    "SkippedMessage",
    "compressed_image_message",
    "episodes_from_instructions",
    "get_bag_typestore",
    "header_message",
    "image_message",
    "load_episode_file",
    "make_qos",
    "string_message",
]

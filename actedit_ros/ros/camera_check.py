"""A look, every few seconds, for camera publishers the goal node can never hear (replaces rclpy's QoS event warning,
which the node's camera subscriptions do without: see GoalNode._create_interfaces)."""
from __future__ import annotations

from rclpy.qos import ReliabilityPolicy

CAMERA_PUBLISHER_CHECK_PERIOD = 2.0  # seconds between looks for camera publishers this node cannot hear (reliable QoS)


class CameraPublisherCheck:
    """Warn once per publisher whose frames can never arrive: a best-effort camera publisher while the node's camera
    subscriptions are reliable (the only incompatibility their QoS allows). Runs on a timer in ``callback_group``."""

    def __init__(self, node, subscriptions, callback_group):
        self.node = node
        self.subscriptions = [s for s in subscriptions if s is not None]
        self.warned: set[tuple[str, bytes]] = set()
        self.timer = node.create_timer(CAMERA_PUBLISHER_CHECK_PERIOD, self.check, callback_group=callback_group)

    def check(self) -> None:
        for subscription in self.subscriptions:
            for info in self.node.get_publishers_info_by_topic(subscription.topic_name):
                key = (subscription.topic_name, bytes(info.endpoint_gid))
                if info.qos_profile.reliability != ReliabilityPolicy.BEST_EFFORT or key in self.warned:
                    continue
                self.warned.add(key)
                publisher = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                self.node.get_logger().warning(
                    f"camera publisher {publisher} on {subscription.topic_name} is best effort, but this node's "
                    "qos_reliability is reliable: none of its frames will arrive. Set qos_reliability to best_effort.")

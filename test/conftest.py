"""Shared test setup.

Every test session gets its own ROS domain and stays on this host, so parallel runs (and other developers'
nodes) never see each other's topics. This must happen before rclpy is imported anywhere.
"""
import os
import random

os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# One torch thread in tests: the ROS executor threads need the other core, and parallel test runs stay fair.
import torch  # noqa: E402

torch.set_num_threads(1)

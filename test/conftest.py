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

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SOURCE = Path(__file__).resolve().parents[1]


def find_colcon_install() -> Path | None:
    """Install prefix of the colcon-built actedit_ros the install tests check, or None.

    The first prefix on AMENT_PREFIX_PATH that registers the package in the ament index wins: under
    `colcon test` (colcon sources the package's own install) and in a shell that sourced a workspace's
    install/setup.bash, that is the workspace's install; with scripts/env.sh it is this checkout's install/.
    Without either, this checkout's install/actedit_ros (scripts/setup.sh builds it) is used when it exists.
    """
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        return Path(get_package_prefix("actedit_ros"))
    except (PackageNotFoundError, OSError):  # not in the ament index / AMENT_PREFIX_PATH unset
        pass
    local = SOURCE / "install" / "actedit_ros"
    return local if (local / "share" / "actedit_ros" / "package.xml").is_file() else None


@pytest.fixture(scope="session")
def colcon_install() -> Path:
    """The colcon install prefix of actedit_ros (see :func:`find_colcon_install`); skips the test without one."""
    prefix = find_colcon_install()
    if prefix is None:
        pytest.skip("no colcon install of actedit_ros: none on AMENT_PREFIX_PATH and no install/ in the source "
                    "(run scripts/setup.sh, or colcon build and source install/setup.bash)")
    return prefix

# Source this file to use the project's venv, ROS 2 wheels and the colcon-built interfaces:
#   . scripts/env.sh
# (scripts/setup.sh creates all three; it is safe to source before setup has run.)
_actedit_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ACTEDIT_ROOT="$_actedit_root"
export VIRTUAL_ENV="$_actedit_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
_actedit_site="$_actedit_root/install/actedit_ros/lib/python3.11/site-packages"
# The repo comes first so edited sources win over the installed copy; actedit_ros/__init__.py extends its
# __path__ so the generated actedit_ros.msg / actedit_ros.srv are found in the colcon install.
export PYTHONPATH="$_actedit_root:$_actedit_site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$_actedit_root/install/actedit_ros/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$_actedit_root/install/actedit_ros:$VIRTUAL_ENV"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Never reach for a model hub: every model is loaded from local files.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
unset _actedit_root _actedit_site

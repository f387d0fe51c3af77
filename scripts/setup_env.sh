#!/usr/bin/env bash
# Create everything h1_training needs, from nothing, idempotently:
#   Debian packages (when root), .venv (Python 3.11), ROS 2 Kilted wheels, this package (editable, with extras),
#   the h1_training_interfaces rosidl package built into the venv, the Foxglove panel npm packages, and the web
#   page (web_ui/: npm install + esbuild bundle into src/h1_training/web/static/).
# Each stage writes a stamp holding the hash of its inputs; an unchanged stage is skipped, so a second run
# finishes in seconds.  Usage: scripts/setup_env.sh [--extras robot,train,test] [--no-npm]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${H1_VENV:-$ROOT/.venv}
STAMPS=$VENV/.h1_stamps
EXTRAS=${H1_EXTRAS:-robot,train,test,gateway,web}
WITH_NPM=1
while [ $# -gt 0 ]; do
  case "$1" in
    --extras) EXTRAS=$2; shift 2 ;;
    --no-npm) WITH_NPM=0; shift ;;
    *) echo "setup_env.sh: unknown option '$1' (use --extras LIST, --no-npm)" >&2; exit 2 ;;
  esac
done

PY=${H1_PYTHON:-python3.11}
ROS_WHEELS="ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp ros-kilted-std-srvs ros-kilted-std-msgs
 ros-kilted-sensor-msgs ros-kilted-diagnostic-msgs ros-kilted-rcl-interfaces ros-kilted-builtin-interfaces
 ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators ros-kilted-ament-cmake
 ros-kilted-ament-package ros-kilted-ament-cmake-include-directories ros-kilted-ament-cmake-ros-core catkin_pkg"
DEBS="cmake g++ make rsync libusb-1.0-0"  # libusb: pyrealsense2 loads it

say() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

# 1. Debian packages
missing=""
for p in $DEBS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
# Node.js may come from elsewhere than Debian (e.g. NodeSource); only ask for Debian's when there is none.
if [ "$WITH_NPM" = 1 ] && { [ -f foxglove_panels/package.json ] || [ -f web_ui/package.json ]; } && ! command -v npm >/dev/null; then
  missing="$missing nodejs npm"
fi
# the browser tests (web app, panels) drive Debian's chromium; without it they are skipped, so CI (root) gets it
case ",$EXTRAS," in *,test,*)
  if [ "$WITH_NPM" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then missing="$missing chromium"
    else echo "[setup] note: no /usr/bin/chromium; browser tests will be skipped (sudo apt-get install -y chromium)" >&2; fi
  fi ;;
esac
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing Debian packages. Run: sudo apt-get install -y$missing" >&2; exit 1
  fi
fi
command -v "$PY" >/dev/null || { echo "[setup] $PY not found: install Python 3.11 (ROS 2 Kilted wheels are cp311)" >&2; exit 1; }

# 2. venv + ROS 2 wheels
if [ ! -x "$VENV/bin/python" ]; then say "creating $VENV"; "$PY" -m venv "$VENV"; fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
h=$(echo "$ROS_WHEELS" | sha256sum | cut -c1-16)
if ! fresh ros "$h"; then
  say "installing ROS 2 Kilted wheels (about 25 s)"
  $PIP install --upgrade pip >/dev/null
  $PIP install $ROS_WHEELS
  # The wheels' CMake exports name the build machine's include dirs; point them at this interpreter's.
  py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  { grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "$f"
  done || true
  stamp ros "$h"
fi

# 3. this package + extras (torch/lerobot only in the "train" extra)
h=$(hash_of setup.py setup.cfg; echo "$EXTRAS")
if ! fresh pkg "$h"; then
  say "installing h1_training[$EXTRAS] (first time with 'train': torch + lerobot, several GB, a few minutes)"
  $PIP install -e ".[$EXTRAS]"
  case ",$EXTRAS," in *,robot,*)
    # unitree_sdk2py from PyPI; --no-deps so that its opencv-python does not overwrite lerobot's
    # opencv-python-headless (both provide cv2). Its real dependencies (cyclonedds, numpy) come from our extra.
    $PIP install --no-deps "unitree-sdk2py-dimos==1.0.3" ;;
  esac
  case ",$EXTRAS," in *,test,*)
    # The unmodified openpi-client from PyPI, to prove protocol compatibility. It pins numpy<2, which
    # lerobot's stack and the ROS wheels do not allow; its code runs on numpy 2, so --no-deps (its other
    # dependencies, msgpack, websockets, pillow, dm-tree, come from our extras).
    $PIP install --no-deps "openpi-client==0.1.2"
    # openpi's own WebsocketPolicyServer as packaged on PyPI: the peer of `h1-training bench policy-loop`
    # (same reason for --no-deps: it depends only on openpi-client and websockets)
    $PIP install --no-deps "openpi-server==0.1.0" ;;
  esac
  "$VENV/bin/python" -c "import cv2, numpy; cv2.imencode('.jpg', numpy.zeros((8, 8, 3), numpy.uint8))" \
    || { echo "[setup] OpenCV import check failed (two cv2 packages?)" >&2; exit 1; }
  stamp pkg "$h"
fi

# 4. h1_training_interfaces into the venv
h=$(hash_of msg_srv/CMakeLists.txt msg_srv/package.xml msg_srv/msg/* msg_srv/srv/*)
if ! fresh interfaces "$h" || ! "$VENV/bin/python" -c "import h1_training_interfaces.msg" 2>/dev/null; then
  say "building h1_training_interfaces (about 10-60 s)"
  rm -rf build/msg_srv; mkdir -p build
  export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH
  cmake -S msg_srv -B build/msg_srv -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" \
    -DBUILD_TESTING=OFF >build/msg_srv.log 2>&1 || { tail -30 build/msg_srv.log; exit 1; }
  cmake --build build/msg_srv -j2 >>build/msg_srv.log 2>&1 || { tail -30 build/msg_srv.log; exit 1; }
  cmake --install build/msg_srv >>build/msg_srv.log 2>&1 || { tail -30 build/msg_srv.log; exit 1; }
  "$VENV/bin/python" -c "import h1_training_interfaces.msg, h1_training_interfaces.srv"
  stamp interfaces "$h"
fi

# 5. Foxglove panel npm packages
if [ "$WITH_NPM" = 1 ] && [ -f foxglove_panels/package.json ]; then
  h=$(hash_of foxglove_panels/package.json foxglove_panels/package-lock.json)
  if ! fresh npm "$h" || [ ! -d foxglove_panels/node_modules ]; then
    say "installing Foxglove panel npm packages"
    # --no-save: install what the lock file pins without rewriting it (`make test` leaves the work tree clean).
    # Not `npm ci`: a lock written on one platform leaves out other platforms' optional packages (rollup's),
    # which `npm ci` refuses as "out of sync".
    (cd foxglove_panels && npm install --no-save --no-audit --no-fund --loglevel=error)
    stamp npm "$h"
  fi
  # 6. the extension itself: dist/extension.js and the installable dist/h1-training-panels.foxe
  h=$(hash_of foxglove_panels/package.json foxglove_panels/package-lock.json foxglove_panels/tsconfig.json \
      $(find foxglove_panels/src -type f | sort))
  if ! fresh foxe "$h" || [ ! -f foxglove_panels/dist/h1-training-panels.foxe ]; then
    say "building the Foxglove extension (foxglove_panels/dist/h1-training-panels.foxe)"
    (cd foxglove_panels && npm run --silent build >/dev/null && npm run --silent package >/dev/null)
    stamp foxe "$h"
  fi
fi
# 6. the web page: npm packages (uPlot, esbuild, playwright-core for the browser tests) and the esbuild bundle.
#    The bundle is built here, not committed: its sources and package-lock.json are the truth, a committed copy
#    could go stale or conflict in merges; the app answers 503 with this command when it is missing.
if [ "$WITH_NPM" = 1 ] && [ -f web_ui/package.json ]; then
  h=$(hash_of web_ui/package.json web_ui/package-lock.json web_ui/build.mjs web_ui/src/*)
  if ! fresh webui "$h" || [ ! -d web_ui/node_modules ] || [ ! -f src/h1_training/web/static/app.js ]; then
    say "building the web page (web_ui: npm install + esbuild)"
    (cd web_ui && npm install --no-audit --no-fund --loglevel=error && npm run --silent build)
    stamp webui "$h"
  fi
fi
say "environment ready: $VENV"

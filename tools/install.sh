#!/usr/bin/env bash
# Install niche3d into ./.venv (Python >= 3.12), with the napari plugin.
#
#   bash tools/install.sh          # the library, the CLI and the napari plugin
#   bash tools/install.sh --test   # also test packages and the Debian packages for
#                                  # headless Qt under Xvfb and a headless chromium
#                                  # (needs root or sudo for apt)
#
# Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (allowed: --test)" >&2; exit 2 ;;
  esac
done

find_python() {
  local c
  for c in "${NICHE3D_PYTHON:-}" python3.12 python3.13 python3 \
           /root/.pyenv/versions/3.12*/bin/python3 /root/.pyenv/versions/3.13*/bin/python3 \
           /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
      command -v "$c" 2>/dev/null || echo "$c"
      return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(find_python) || { echo "install.sh: no Python >= 3.12 found (set NICHE3D_PYTHON=/path/to/python3.12)" >&2; exit 1; }
  echo "install.sh: creating .venv with $py" >&2
  "$py" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
uvpip() { .venv/bin/uv pip install --quiet --python .venv/bin/python "$@"; }

if [ "$want_test" = 1 ]; then
  # Headless Qt/OpenGL for napari under Xvfb (see shared notes), and Debian's chromium,
  # which the HTML report test drives through playwright; only what is missing.
  pkgs="xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
        libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-shape0
        libxcb-cursor0 libxcb-xfixes0 libxcb-xkb1 libdbus-1-3 libfontconfig1 libglib2.0-0
        libgl1-mesa-dri libegl-mesa0 chromium fonts-dejavu-core"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    echo "install.sh: apt-get install$missing" >&2
    $sudo_cmd apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  uvpip -e ".[test]" -e plugins/napari-niche3d
else
  uvpip -e . -e plugins/napari-niche3d "napari[pyqt6]>=0.6"
  # compile and cache the numba kernels now, so the first run starts at once (the test
  # suite compiles its own bounds-checked copies, so --test skips this)
  .venv/bin/niche3d warmup
fi
echo "install.sh: ready (.venv/bin/niche3d)" >&2

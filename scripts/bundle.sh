#!/usr/bin/env bash
# Builds the standalone app: a one-folder PyInstaller bundle of nstyle for the platform it
# runs on (the command line, `nstyle gui` and the service, with the VGG19 weights inside),
# which needs no Python on the machine that runs it. Started with no arguments (a
# double-click) it opens the web page; with arguments it is the `nstyle` command.
#   bash scripts/bundle.sh            -> dist/nstyle/  (run dist/nstyle/nstyle; macOS: dist/nstyle.app too)
#   bash scripts/bundle.sh --smoke    also smoke-tests it (scripts/smoke.sh) and times its start-up
#   bash scripts/bundle.sh --smoke-only   the smoke test and timings of an existing dist/nstyle
# The same script builds on Windows (Git Bash, PYTHON=python) and macOS: see docs/install.md.
# The bundle is made from the wheel (as a user installs it, via scripts/install_wheel.sh)
# in build/bundle/, never from this checkout's editable install.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_APP=1 SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    --smoke-only) SMOKE=1 BUILD_APP=0 ;;
    *) echo "usage: bash scripts/bundle.sh [--smoke|--smoke-only]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
WORK=build/bundle
APP=dist/nstyle/nstyle; [ -f "$APP.exe" ] && APP="$APP.exe"

build_app() {
  local t0 vpy
  t0=$(date +%s)
  rm -rf "$WORK" build/pyinstaller dist/nstyle dist/nstyle.app
  mkdir -p "$WORK"
  echo "bundle: building the wheel ..." >&2
  "$PY" -m pip wheel -q --no-deps --wheel-dir "$WORK/wheel" . 2>&1 | { grep -v '^WARNING: Location' || true; }
  echo "bundle: installing it into $WORK/venv ..." >&2
  # (no bytecode at install: PyInstaller compiles what it bundles)
  NSTYLE_PIP_NO_COMPILE=1 bash scripts/install_wheel.sh "$WORK/venv" "$(echo "$WORK"/wheel/nstyle-*.whl)" service
  vpy="$ROOT/$WORK/venv/bin/python"; [ -x "$ROOT/$WORK/venv/Scripts/python.exe" ] && vpy="$ROOT/$WORK/venv/Scripts/python.exe"
  "$vpy" -m pip install -q --disable-pip-version-check "${PYINSTALLER:-pyinstaller>=6.10,<7}" 2>&1 \
    | { grep -v '^WARNING: Location' || true; }
  echo "bundle: running PyInstaller ($("$vpy" -m PyInstaller --version)) ..." >&2
  # run from $WORK, so that nothing of this checkout (its nstyle/, its egg-info) is
  # importable there: the bundle gets the installed wheel
  (cd "$WORK" && "$vpy" -m PyInstaller "$ROOT/packaging/nstyle.spec" --noconfirm --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller")
  APP=dist/nstyle/nstyle; [ -f "$APP.exe" ] && APP="$APP.exe"
  echo "bundle: built $APP in $(( $(date +%s) - t0 )) s: $(du -sh dist/nstyle | cut -f1)," \
       "$(find dist/nstyle -type f | wc -l) files" >&2
}

# Seconds from starting the app's GUI (as a double-click does, but without a browser) until
# its page answers: what someone who double-clicks waits for. Also `--version` (one start
# of the executable, torch imported).
time_startup() {
  local data log url start t
  data=$(mktemp -d); log="$data/gui.log"
  start=$(date +%s.%N)
  "$APP" --version > /dev/null
  echo "bundle: '--version' took $(echo "$(date +%s.%N) - $start" | bc) s" >&2
  start=$(date +%s.%N)
  "$APP" gui --no-browser --data "$data/jobs" > "$log" 2>&1 &
  local pid=$!
  url=""
  for _ in $(seq 600); do
    url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$log" | head -1 || true)
    [ -n "$url" ] && curl -sf -o /dev/null "$url" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  t=$(echo "$(date +%s.%N) - $start" | bc)
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  [ -n "$url" ] || { cat "$log" >&2; rm -rf "$data"; echo "bundle: the GUI did not start" >&2; return 1; }
  echo "bundle: 'gui' answered at $url after $t s" >&2
  rm -rf "$data"
}

# The app on a machine without Python, as far as Linux can show it here: in a private mount
# namespace every Python install, libpython and venv of this machine is hidden (tmpfs or
# /dev/null mounted over it), then the app runs the example at 32 px with an empty environment.
run_without_python() {
  if [ "$(uname -s)" != Linux ] || [ "$(id -u)" != 0 ] || ! command -v unshare > /dev/null; then
    echo "bundle: (the run without Python needs Linux, root and unshare: skipped)" >&2; return 0
  fi
  local out; out=$(mktemp -d)
  unshare -m --propagation private sh -ec '
    for d in /usr/lib/python3* /usr/local/lib/python3* /root/.pyenv /opt/wheels "$3/build" "$3/.venv"; do
      [ -d "$d" ] && mount -t tmpfs none "$d"
    done
    for f in /usr/bin/python* /usr/local/bin/python* /usr/lib/*-linux-gnu/libpython3*; do
      [ -f "$f" ] && mount --bind /dev/null "$f"
    done
    if command -v python3 > /dev/null && python3 -c "" 2> /dev/null; then echo "a python3 still runs" >&2; exit 1; fi
    env -i HOME="$1" PATH=/usr/bin:/bin "$2" example --size 32 --iterations 2 -q -o "$1/example.png"
  ' sh "$out" "$ROOT/$APP" "$ROOT" || { rm -rf "$out"; echo "bundle: FAILED without Python" >&2; return 1; }
  [ -s "$out/example.png" ] || { rm -rf "$out"; echo "bundle: FAILED: no example.png without Python" >&2; return 1; }
  echo "bundle: ran the example with every Python of this machine hidden" >&2
  rm -rf "$out"
}

[ "$BUILD_APP" = 1 ] && build_app
if [ "$SMOKE" = 1 ]; then
  [ -f "$APP" ] || { echo "bundle: no $APP; build it first (bash scripts/bundle.sh)" >&2; exit 1; }
  bash scripts/smoke.sh "$PWD/$APP"
  run_without_python
  time_startup
  time_startup  # again: the operating system's file cache now holds the bundle
fi

#!/usr/bin/env bash
# Creates .venv and installs nstyle with everything it needs. Idempotent.
#   bash scripts/setup.sh          the tool, its Python API, its web service and video (PyAV, OpenCV)
#   bash scripts/setup.sh --test   also the test tools, Ray (the cluster extra, whose tests start a
#                                  local Ray instance) and Debian's chromium for the browser test
# torch is pinned to the CPU wheel that lies on this kind of machine (2.13.0); the package
# itself only asks for torch>=2.1, so elsewhere any recent torch works.
# Each step says what it does and how long it usually takes; pip's own output is kept in a
# log and shown only when a step fails (NSTYLE_SETUP_VERBOSE=1 shows it all as it comes).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=service,video
TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) EXTRAS=test,cluster,video; TEST=1 ;;
    *) echo "usage: bash scripts/setup.sh [--test]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
LOG=$(mktemp "${TMPDIR:-/tmp}/nstyle-setup.XXXXXX")
trap 'rm -f "$LOG"' EXIT
START=$(date +%s)

# step "what it does" "how long it usually takes" command...: one line before, the seconds
# it took after; on failure the command's output and where it stopped
step() {
  local what=$1 usual=$2
  shift 2
  local t0
  t0=$(date +%s)
  printf 'setup: %s (%s) ... ' "$what" "$usual" >&2
  if [ -n "${NSTYLE_SETUP_VERBOSE:-}" ]; then
    echo >&2
    "$@" >&2 || { echo "setup: failed: $what" >&2; exit 1; }
  elif ! "$@" >"$LOG" 2>&1; then
    echo "failed" >&2
    # this machine's pip index prints a warning per package that means nothing: left out
    grep -v '^WARNING: Location' "$LOG" | tail -40 >&2
    echo "setup: failed: $what (the lines above are its last output)" >&2
    exit 1
  fi
  [ -n "${NSTYLE_SETUP_VERBOSE:-}" ] || echo "done in $(($(date +%s) - t0)) s" >&2
}

pipq() { python -m pip --disable-pip-version-check --no-input "$@"; }

if [ ! -x .venv/bin/python ]; then
  step "creating the virtual environment .venv" "a few seconds" "$PY" -m venv .venv
fi
. .venv/bin/activate
step "updating pip" "about 10 s" pipq install --upgrade pip
# pinned first so that nothing below pulls a multi-GB CUDA build
step "installing PyTorch ${NSTYLE_TORCH_VERSION:-2.13.0} (CPU)" "about a minute; longer on a slow network" \
  pipq install "torch==${NSTYLE_TORCH_VERSION:-2.13.0}"
step "installing nstyle and its extras ($EXTRAS)" "one to two minutes the first time, seconds after" pipq install -e ".[$EXTRAS]"
python -c "import torch, nstyle; print('setup: nstyle', nstyle.__version__, 'with torch', torch.__version__, 'is ready in .venv', file=__import__('sys').stderr)"

# The browser test (tests/service/test_service_e2e.py) drives Debian's chromium through Playwright;
# Playwright's own browser download cannot work offline, so the system package is used.
# Only for a test set-up, only if missing; NSTYLE_NO_BROWSER=1 skips it.
if [ "$TEST" = 1 ] && [ -z "${NSTYLE_NO_BROWSER:-}" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null; then
    echo "setup: note: /usr/bin/chromium is missing and cannot be installed here (needs apt-get as root);" \
         "the browser test will be skipped" >&2
  else
    step "updating Debian's package lists" "about 10 s" $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq update
    step "installing Debian's chromium for the browser test" "about a minute" \
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends chromium
  fi
fi
if [ "$TEST" = 1 ] && [ -x /usr/bin/chromium ]; then
  echo "setup: browser test uses $(/usr/bin/chromium --version 2>/dev/null || echo chromium)" >&2
fi
echo "setup: finished in $(($(date +%s) - START)) s" >&2

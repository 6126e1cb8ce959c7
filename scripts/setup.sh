#!/usr/bin/env bash
# Creates .venv and installs nstyle with everything it needs. Idempotent.
#   bash scripts/setup.sh          the tool, its Python API, its web service and video (PyAV, OpenCV)
#   bash scripts/setup.sh --test   also the test tools, Ray (the cluster extra, whose tests start a
#                                  local Ray instance) and Debian's chromium for the browser test
# torch is pinned to the CPU wheel that lies on this kind of machine (2.13.0); the package
# itself only asks for torch>=2.1, so elsewhere any recent torch works.
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
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# pip's own status survives the filter that hides this machine's noisy index warnings
pipq() { python -m pip -q --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; return "${PIPESTATUS[0]}"; }
pipq install --upgrade pip
# pin torch first so nothing below pulls a multi-GB CUDA build
pipq install "torch==${NSTYLE_TORCH_VERSION:-2.13.0}"
pipq install -e ".[$EXTRAS]"
python -c "import torch, nstyle; print('nstyle', nstyle.__version__, 'with torch', torch.__version__)"

# The browser test (tests/test_service_e2e.py) drives Debian's chromium through Playwright;
# Playwright's own browser download cannot work offline, so the system package is used.
# Only for a test set-up, only if missing; NSTYLE_NO_BROWSER=1 skips it.
if [ "$TEST" = 1 ] && [ -z "${NSTYLE_NO_BROWSER:-}" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null; then
    echo "note: /usr/bin/chromium is missing and cannot be installed here (needs apt-get as root);" \
         "the browser test will be skipped" >&2
  else
    echo "installing Debian's chromium for the browser test ..."
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends chromium >/dev/null
  fi
fi
if [ "$TEST" = 1 ] && [ -x /usr/bin/chromium ]; then
  /usr/bin/chromium --version 2>/dev/null || true  # (Debian's wrapper warns harmlessly on stderr)
fi

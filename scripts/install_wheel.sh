#!/usr/bin/env bash
# Installs a built nstyle wheel into a new venv the way a user's `pip install` would (not
# editable), with torch pinned first as scripts/setup.sh pins it. The wheel test
# (scripts/check_wheel.sh), the standalone app (scripts/bundle.sh) and the Dockerfile all
# install through this script, so all three get the same environment.
#   bash scripts/install_wheel.sh VENV WHEEL [EXTRAS]      e.g. EXTRAS=service
# TORCH_INDEX_URL, when set, is where torch alone comes from (the Dockerfile points it at
# PyTorch's CPU wheels; on PyPI the Linux torch is the CUDA build). Unset, pip's own
# configuration finds it (here: the CPU wheel on disk). NSTYLE_PIP_NO_COMPILE=1 skips
# writing bytecode (same files otherwise; a throwaway venv starts sooner without it).
set -euo pipefail
VENV=${1:?usage: install_wheel.sh VENV WHEEL [EXTRAS]}
WHEEL=${2:?usage: install_wheel.sh VENV WHEEL [EXTRAS]}
EXTRAS=${3:-service}
[ -f "$WHEEL" ] || { echo "install_wheel.sh: no wheel at $WHEEL" >&2; exit 2; }
[ -e "$VENV" ] && { echo "install_wheel.sh: $VENV exists; this makes a fresh venv" >&2; exit 2; }
"${PYTHON:-python3}" -m venv "$VENV"
VPY="$VENV/bin/python"; [ -x "$VENV/Scripts/python.exe" ] && VPY="$VENV/Scripts/python.exe"  # Windows
# pip's own status survives the filter that hides this machine's noisy index warnings
COMPILE=--compile; [ "${NSTYLE_PIP_NO_COMPILE:-}" = 1 ] && COMPILE=--no-compile
pipq() { "$VPY" -m pip -q --disable-pip-version-check "$@" "$COMPILE" 2>&1 | { grep -v '^WARNING: Location' || true; }; return "${PIPESTATUS[0]}"; }
TORCH="torch==${NSTYLE_TORCH_VERSION:-2.13.0}"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  pipq install "$TORCH" --index-url "$TORCH_INDEX_URL"
else
  pipq install "$TORCH"
fi
pipq install "${WHEEL}${EXTRAS:+[$EXTRAS]}"
"$VPY" -c "import torch, nstyle; print('installed nstyle', nstyle.__version__, 'with torch', torch.__version__)"

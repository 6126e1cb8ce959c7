#!/usr/bin/env bash
# Creates .venv and installs nstyle with everything it needs. Idempotent.
# torch is pinned to the CPU wheel that lies on this kind of machine (2.13.0); the package
# itself only asks for torch>=2.1, so elsewhere any recent torch works.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# pip's own status survives the filter that hides this machine's noisy index warnings
pipq() { python -m pip -q --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; return "${PIPESTATUS[0]}"; }
pipq install --upgrade pip
# pin torch first so nothing below pulls a multi-GB CUDA build
pipq install "torch==${NSTYLE_TORCH_VERSION:-2.13.0}"
pipq install -e ".[${NSTYLE_EXTRAS:-test}]"
python -c "import torch, nstyle; print('nstyle', nstyle.__version__, 'with torch', torch.__version__)"

#!/usr/bin/env bash
# The wheel as a user gets it: `python -m build` makes the sdist and, from it, the wheel;
# scripts/check_dist.py checks their contents and metadata; scripts/install_wheel.sh
# installs the wheel with the service extra into a fresh venv (not editable, torch pinned);
# scripts/smoke.sh then runs that venv's nstyle: --version, --help, the example at 64 px,
# and 'serve' answering one job. .ci/run runs this after the tests.
#   bash scripts/check_wheel.sh            (BUILD_PYTHON: a python with 'build'; default .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_PY=${BUILD_PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s)
# (a throwaway venv: no bytecode written at install, see install_wheel.sh)
echo "check_wheel: building the sdist and the wheel ..." >&2
# build's isolated environment fetches setuptools through pip, with pip's usual caches
"$BUILD_PY" -m build --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log" >&2; echo "check_wheel: python -m build failed" >&2; exit 1; }
"$BUILD_PY" scripts/check_dist.py "$WORK/dist"
t1=$(date +%s)
echo "check_wheel: installing $(basename "$WORK"/dist/*.whl) into a fresh venv ..." >&2
NSTYLE_PIP_NO_COMPILE=1 bash scripts/install_wheel.sh "$WORK/venv" "$(echo "$WORK"/dist/nstyle-*.whl)" service
t2=$(date +%s)
# run from elsewhere, so the checkout's nstyle/ folder cannot stand in for the installed one
(cd "$WORK" && bash "$OLDPWD/scripts/smoke.sh" "$WORK/venv/bin/nstyle")
t3=$(date +%s)
echo "check_wheel: passed (build $((t1 - t0)) s, install $((t2 - t1)) s, smoke $((t3 - t2)) s)" >&2

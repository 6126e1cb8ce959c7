#!/bin/bash
# the new default (f8304e8: the last scale reads nothing deeper than relu3_1), the six held-out pairs, 512 px, auto (bf16)
S=/work/shared/images
cd /work/main
for pair in golden_gate:composition_vii golden_gate:shipwreck hoovertowernight:composition_vii hoovertowernight:starry_night tubingen:shipwreck tubingen:the_scream; do
  c=${pair%%:*}; s=${pair##*:}
  .venv/bin/nstyle $S/$c.jpg $S/$s.jpg -o /tmp/ho/relu3/${c}__${s}.png 2>&1 | tail -1
done

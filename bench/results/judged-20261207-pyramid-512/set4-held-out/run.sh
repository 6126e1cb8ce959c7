#!/bin/bash
# run from the repository root. Held-out pairs (the six photo x painting combinations the judged sets did not use): the previous default against the new one, 512 px, auto (bf16)
S=../shared/images
for pair in tubingen:the_scream tubingen:shipwreck golden_gate:shipwreck golden_gate:composition_vii hoovertowernight:starry_night hoovertowernight:composition_vii; do
  c=${pair%%:*}; s=${pair##*:}
  .venv/bin/nstyle $S/$c.jpg $S/$s.jpg -o ${OUT:-/tmp/ho}/previous/${c}__${s}.png --parameterization pixels --style-margin 0 2>&1 | tail -1
  .venv/bin/nstyle $S/$c.jpg $S/$s.jpg -o ${OUT:-/tmp/ho}/new/${c}__${s}.png 2>&1 | tail -1
done
echo done

#!/bin/bash
# candidates: the last scale reads relu1_1..relu3_1 only (relu4_1, relu4_2, relu5_1 coarse-only),
# holding the photo there with a content term at relu3_1 (weight W beside relu4_2's 1, both scales).
# six shared pairs, 512 px, auto precision (bf16 here)
S=/work/shared/images
cd /work/main
for W in 0.1 0.3; do
for pair in tubingen:starry_night golden_gate:the_scream hoovertowernight:shipwreck tubingen:composition_vii golden_gate:starry_night hoovertowernight:the_scream; do
  c=${pair%%:*}; s=${pair##*:}
  .venv/bin/nstyle $S/$c.jpg $S/$s.jpg -o /tmp/c2/w${W/./}/${c}__${s}.png --content-layers relu4_2,relu3_1 --content-layer-weights 1,$W --coarse-only-layers relu4_1,relu4_2,relu5_1 2>&1 | tail -1
done; done

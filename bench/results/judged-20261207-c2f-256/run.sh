# 256 px outputs coarse to fine (128 px x 70, then 256 px x 30) against the default (one
# 256 px scale x 100, the Gram side of ../judged-20261207-nnst-256, same machine, bf16)
cd /work/main
for p in tubingen__starry_night golden_gate__the_scream hoovertowernight__shipwreck tubingen__composition_vii golden_gate__starry_night hoovertowernight__the_scream; do
  c=${p%%__*}; s=${p##*__}
  /usr/bin/time -f "c2f $p %e s" .venv/bin/nstyle ../shared/images/$c.jpg ../shared/images/$s.jpg -o /tmp/c2f256/c2f/$p.png --size 256 --scales 128,256 --scale-iterations 70,30 -q
done

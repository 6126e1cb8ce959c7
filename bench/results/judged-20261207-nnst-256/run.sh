# NNST (--method nnst, its defaults: colour finish on, 4 rotations) against the Gram
# default at 256 px on the six shared pairs; one run at a time on the 2-core EPYC
cd /work/main
for p in tubingen__starry_night golden_gate__the_scream hoovertowernight__shipwreck tubingen__composition_vii golden_gate__starry_night hoovertowernight__the_scream; do
  c=${p%%__*}; s=${p##*__}
  for m in gram nnst; do
    mkdir -p /tmp/nnst256/$m
    extra=""; [ $m = nnst ] && extra="--method nnst"
    /usr/bin/time -f "$m $p %e s %M KB" .venv/bin/nstyle ../shared/images/$c.jpg ../shared/images/$s.jpg -o /tmp/nnst256/$m/$p.png --size 256 $extra -q
  done
done
echo done

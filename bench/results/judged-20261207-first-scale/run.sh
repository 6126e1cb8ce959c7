cd /work/main
for v in base:100,30 s50:50,30 s70:70,30; do
  name=${v%%:*}; its=${v#*:}; mkdir -p /tmp/s1/$name
  for p in tubingen__starry_night golden_gate__the_scream hoovertowernight__shipwreck tubingen__composition_vii golden_gate__starry_night hoovertowernight__the_scream; do
    c=${p%%__*}; s=${p##*__}
    /usr/bin/time -f "$name $p %e s" .venv/bin/nstyle ../shared/images/$c.jpg ../shared/images/$s.jpg -o /tmp/s1/$name/$p.png --scale-iterations $its -q
  done
done
echo done

"""Later-frame variants on bench/video.py's pan and zoom: frames, consistency, seconds."""
import json, sys, time, statistics
sys.path.insert(0, "/work/main/bench")
import nstyle, torch
import video as bench_video
from nstyle.io.example import example_images
from nstyle.io.images import to_tensor
from nstyle.options.config import Config
from nstyle.tasks.video import VideoOptions, VideoStylizer
from pathlib import Path
name, clip_kind, its, coarse, prec = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
frames = int(sys.argv[6]) if len(sys.argv) > 6 else 10
out = Path(f"/tmp/vx/{name}-{clip_kind}"); out.mkdir(parents=True, exist_ok=True)
clip = bench_video.make_clip(clip_kind, frames, 256)
_, style = example_images()
opts = dict(size=256, seed=0, precision=prec, iterations=50)
if coarse != "-":
    opts["coarse_only_layers"] = coarse.split(",")
config = Config.from_options(**opts)
vs = VideoStylizer(config, [to_tensor(style)], VideoOptions(frame_iterations=its))
rows = []
for f in vs.frames(clip):
    f.image.save(out / f"{f.index:02d}.png")
    rows.append({"frame": f.index, "s": f.seconds, "err": f.temporal_error, "its": f.result.iterations})
later = rows[1:]
summary = {"name": name, "clip": clip_kind, "frame_iterations": its, "coarse_only": coarse, "precision": prec,
           "temporal_error": statistics.mean(r["err"] for r in later),
           "later_s": statistics.mean(r["s"] for r in later), "rows": rows}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(name, clip_kind, f"err {summary['temporal_error']:.3f} later {summary['later_s']:.2f} s")

"""Video jobs through the service: POST /api/videos makes one job in the queue, whose
result is an MP4 with the clip's rate and sound."""

from __future__ import annotations

import io
import json

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")
av = pytest.importorskip("av")

from nstyle.service.settings import ServiceSettings  # noqa: E402
from tests.support.service import client_for, encode, events, job, wait_finished, wait_for  # noqa: E402
from tests.support.clips import panned, texture, write_video  # noqa: E402


@pytest.fixture
def clip_bytes(tmp_path):
    path = write_video(tmp_path / "walk.mp4", panned(texture(96, 48), 4, 2), fps=15, audio=True)
    return path.read_bytes()


def video_files(clip: bytes, style: bytes, name="walk.mp4"):
    return [("clip", (name, clip, "video/mp4")), ("style", ("style1.png", style, "image/png"))]


def test_video_job_runs_every_frame_and_serves_a_playable_mp4(tmp_path, clip_bytes, style_img):
    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0)
    with client_for(settings) as client:
        r = client.post("/api/videos", files=video_files(clip_bytes, encode(style_img)),
                        data={"size": "32", "iterations": "2", "frame_iterations": "1",
                              "temporal_weight": "100"})
        assert r.status_code == 201, r.text
        view = r.json()
        assert view["inputs"]["clip"]["name"] == "walk.mp4" and view["inputs"]["content"]["width"] == 64
        assert json.loads(view["options"]["video_options"])["temporal_weight"] == 100
        stream = events(client, view["id"])
        assert stream[-1][0] == "end" and stream[-1][1]["state"] == "succeeded", stream[-1][1]["error"]
        progress = [d for e, d in stream if e == "progress"]
        assert progress[-1]["iterations"] == 2 + 3 * 1 and progress[-1]["phase"] == "video"
        live = [p for p in progress if "scales" in p]  # the finished job's last event has no frame count
        assert live and {p["scales"] for p in live} == {4} and all(1 <= p["scale"] <= 4 for p in live)
        finished = job(client, view["id"])
        assert finished["iterations"] == 5 and finished["output_size"] == [32, 24]
        assert "preview" in finished["links"]  # a frame, for the job list
        result = client.get(finished["links"]["result"])
        assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(result.content)) as container:
            stream_v = container.streams.video[0]
            assert stream_v.average_rate == 15 and container.streams.audio
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 4 and frames[0].shape == (24, 32, 3)
        record = client.get(finished["links"]["record"]).json()
        assert record["clip"]["frames"] == 4 and record["written"]["audio"] == "copied (aac)"
        assert record["job"]["id"] == view["id"] and len(record["frames"]) == 4
        assert record["inputs"] == {"clip": "walk.mp4", "styles": ["style1.png"]}
        assert str(settings.data_dir) not in json.dumps(record)  # nothing of the server's disk
        bundle = client.get(finished["links"]["bundle"])
        assert bundle.status_code == 200 and b"result.mp4" in bundle.content
        assert client.get(view["links"]["self"] + "/inputs/clip").content == clip_bytes


def test_a_cancelled_video_continues_after_its_finished_frames_when_retried(tmp_path, clip_bytes, style_img):
    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0)
    with client_for(settings) as client:
        r = client.post("/api/videos", files=video_files(clip_bytes, encode(style_img)),
                        data={"size": "32", "iterations": "2", "frame_iterations": "400",
                              "tolerance": "0"})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_for(lambda: (lambda j: j["progress"] and j["progress"]["scale"] >= 2)(job(client, job_id)),
                 what="the second frame to start")
        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
        assert wait_finished(client, job_id)["state"] == "cancelled"
        work = list((settings.data_dir / "jobs" / job_id).glob("result.mp4.nstyle-*"))
        assert len(work) == 1 and (work[0] / "00000.png").exists()
        assert client.post(f"/api/jobs/{job_id}/retry").status_code == 202
        first = wait_for(lambda: (lambda j: j["progress"] if j["progress"] and j["progress"]["iteration"] else None)(
            job(client, job_id)), what="the retried job to run")
        assert first["scale"] >= 2 and first["iteration"] > 2  # frame 1 is not run again
        assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
        assert wait_finished(client, job_id)["state"] == "cancelled"


def _m3u8() -> bytes:
    return b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"


@pytest.mark.parametrize("case, status, field, message", [
    ("no clip", 400, "clip", "send exactly one clip"),
    ("playlist", 400, "clip", "not a video this server takes"),
    ("image", 400, "clip", "not a video this server takes"),
    ("frames", 413, "clip", "4 frames, over this server's limit of 3"),
    ("seconds", 413, "clip", "lasts 0.3 s, over this server's limit of 0.2 s"),
    ("pixels", 400, "clip", "over the limit of 1,000"),
    ("size", 400, "size", "limit of 64 px for videos"),
    ("work", 400, "frame_iterations", "over this server's limit of 100 per video"),
    ("flow", 400, "flow", "flow must be one of dis, farneback"),
    ("independent", 400, "independent", "expected true or false"),
    ("mask", 400, "style_mask", "takes only the clip"),
    ("mixing", 400, "mix_iterations", "cannot be set for a video"),
])
def test_bad_videos_are_refused_with_the_field_and_store_nothing(tmp_path, clip_bytes, style_img, content_img,
                                                                case, status, field, message):
    limits = {"frames": {"max_video_frames": 3}, "seconds": {"max_video_seconds": 0.2},
              "pixels": {"max_video_pixels": 1000}, "size": {"max_video_size": 64},
              "work": {"max_video_iterations": 100}}.get(case, {})
    settings = ServiceSettings(data_dir=tmp_path / "data", **limits)
    files = video_files(clip_bytes, encode(style_img))
    data = {"size": "32", "iterations": "2"}
    if case == "no clip":
        files = files[1:]
    elif case == "playlist":
        files[0] = ("clip", ("list.m3u8", _m3u8(), "application/vnd.apple.mpegurl"))
    elif case == "image":
        files[0] = ("clip", ("cat.png", encode(content_img), "image/png"))
    elif case == "size":
        data["size"] = "128"
    elif case == "work":
        data["frame_iterations"] = "50"
    elif case == "flow":
        data["flow"] = "lucas"
    elif case == "independent":
        data["independent"] = "maybe"
    elif case == "mixing":
        data["mix_iterations"] = "5"
    elif case == "mask":
        files.append(("style_mask", ("m.png", encode(content_img), "image/png")))
    with client_for(settings) as client:
        r = client.post("/api/videos", files=files, data=data)
        assert r.status_code == status, r.text
        body = r.json()
        assert message in body["detail"] and body.get("field") == field, body
        assert client.get("/api/jobs").json()["total"] == 0
        assert not any((settings.data_dir / "jobs").iterdir())
        assert not any((settings.data_dir / "tmp").iterdir())


def test_info_lists_the_video_limits_and_options(tmp_path):
    with client_for(ServiceSettings(data_dir=tmp_path / "data")) as client:
        info = client.get("/api/info").json()
        assert info["limits"]["video"]["max_seconds"] == 10.0
        assert [o["name"] for o in info["video_options"]] == ["temporal_weight", "flow",
                                                               "frame_iterations", "independent",
                                                               "whole_frame_style",
                                                               "deep_layer_in_later_frames"]
        assert "/api/videos" in client.get("/api/openapi.json").json()["paths"]


def test_a_video_job_keeps_its_clips_frame_count_and_does_not_probe_the_clip_again(
        tmp_path, clip_bytes, style_img, monkeypatch):
    """The frames are counted once, when the clip is accepted; the job's task reads the
    count from the stored entry (a stored job without one still probes the clip)."""
    import nstyle.service.videos as videos

    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0)
    with client_for(settings) as client:
        probed = []
        real = videos.open_upload

        def counting(*args, **kwargs):
            probed.append(args[1])
            return real(*args, **kwargs)

        monkeypatch.setattr(videos, "open_upload", counting)
        r = client.post("/api/videos", files=video_files(clip_bytes, encode(style_img)),
                        data={"size": "32", "iterations": "1", "frame_iterations": "1"})
        assert r.status_code == 201, r.text
        stream = events(client, r.json()["id"])
        assert stream[-1][1]["state"] == "succeeded", stream[-1][1]["error"]
        assert probed == ["walk.mp4"]  # at submission only
        record = client.get(job(client, r.json()["id"])["links"]["record"]).json()
        assert record["clip"]["frames"] == 4


def test_a_video_job_stored_without_a_frame_count_counts_its_clip(tmp_path, clip_bytes):
    """Jobs accepted before the count was stored with the clip still run."""
    from types import SimpleNamespace

    from nstyle.options.config import Config
    from nstyle.service.videos import CLIP_FIELD, VIDEO_OPTION, video_task
    from nstyle.tasks.video import VideoOptions

    (tmp_path / "clip.mp4").write_bytes(clip_bytes)
    row = SimpleNamespace(id="old", options={VIDEO_OPTION: json.dumps(VideoOptions().to_dict())},
                          inputs={CLIP_FIELD: {"file": "clip.mp4", "name": "walk.mp4", "width": 64,
                                               "height": 48}, "styles": []})
    store = SimpleNamespace(file=lambda job_id, name: tmp_path / name)
    task = video_task(row, Config(), store)
    assert task.frames == 4 and task.frame_size == (64, 48)

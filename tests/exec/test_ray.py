"""Ray: a batch as Ray tasks gives the local run's images; the service runs every kind of
job (image, contact sheet, video) as Ray tasks.

One local Ray instance (2 CPUs) is started for the module: its start-up is most of the
time these tests take.
"""

from __future__ import annotations

import io
import json

import pytest

ray = pytest.importorskip("ray", reason="the cluster extra (Ray) is not installed")

from nstyle.tasks import batch  # noqa: E402
from nstyle.cli.main import main  # noqa: E402
from nstyle.options.config import Config  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2 ** 20,
             log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_batch_gives_the_local_images(local_ray, tmp_path, content_img, style_img, style_img2, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    content_img.save(photos / "cat.png")
    style_img2.save(photos / "coffee.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    style_img.save(tmp_path / "hubble.png")
    common = [str(photos), "--style", str(tmp_path / "hubble.png"), "--size", "32",
              "--iterations", "3", "--init", "noise", "--seed", "7", "-q"]
    assert main(["batch", *common, "-o", str(tmp_path / "local"), "--workers", "1", "--threads", "1"]) == 1
    # on Ray: an address, the instance this process started is used as it is
    assert main(["batch", *common, "-o", str(tmp_path / "ray"), "--cluster", "auto"]) == 1
    assert "1 of 3 pairs failed" in capsys.readouterr().err
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["workers"] == 2 and summary["threads"] == 1
    hubble = tmp_path / "hubble.png"
    cat, coffee, broken = (batch.pair_name(photos / f"{n}.png", hubble) for n in ("cat", "coffee", "broken"))
    states = {r["pair"]: (r["state"], r["style_targets_computed"]) for r in summary["results"]}
    assert states == {broken: ("failed", None), cat: ("done", 0), coffee: ("done", 0)}
    for name in (f"{cat}.png", f"{coffee}.png"):
        # the same seed gives the same image, byte for byte, wherever it ran
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
        record = json.loads((tmp_path / "ray" / (name + ".json")).read_text())
        assert record["seed"] == 7 and record["batch"]["style_targets_computed"] == 0

    # a rerun on Ray does nothing for the finished pairs
    plan = batch.plan_batch([str(photos)], [str(tmp_path / "hubble.png")], str(tmp_path / "ray"),
                            Config.from_options(size=32, iterations=3, init="noise", seed=7))
    assert sorted(plan.done) == [cat, coffee]


def test_service_jobs_run_as_ray_tasks(local_ray, tmp_path, content_img, style_img):
    pytest.importorskip("fastapi", reason="the service extra is not installed")
    from nstyle.exec.ray import RayTaskRunner
    from nstyle.service.settings import ServiceSettings
    from tests.support.service import (ALLOW_LONG, FAST, LONG, client_for, encode, files, wait_finished,
                                 wait_for, wait_running)

    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0, cluster="auto",
                               **ALLOW_LONG)
    content, style = encode(content_img), encode(style_img)
    with client_for(settings) as client:
        assert isinstance(client.app.state.manager.runner, RayTaskRunner)
        r = client.post("/api/jobs", files=files(content, style), data=FAST)
        assert r.status_code == 201, r.text
        done = wait_finished(client, r.json()["id"])
        assert done["state"] == "succeeded" and done["iterations"] == 3
        result = client.get(f"/api/jobs/{done['id']}/result")
        assert result.status_code == 200 and result.content.startswith(b"\x89PNG")

        # a long job: progress and a preview come back from the task; cancel reaches it
        r = client.post("/api/jobs", files=files(content, style), data=LONG)
        running = wait_running(client, r.json()["id"], min_iteration=2)
        assert client.get(f"/api/jobs/{running['id']}/preview").status_code == 200
        assert client.post(f"/api/jobs/{running['id']}/cancel").status_code == 202
        cancelled = wait_finished(client, running["id"])
        assert cancelled["state"] == "cancelled" and "cancelled after" in cancelled["error"]
        # the task itself ended (its CPU is free again), not only the server's wait for it
        wait_for(lambda: ray.available_resources().get("CPU") == 2, timeout=30,
                 what="the cancelled Ray task to end")


class RemoteCalls:
    """The ``ray`` module as the runner sees it, noting the kind of every task it sends."""

    def __init__(self, real) -> None:
        self.real, self.kinds = real, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def remote(self, function):
        handle = self.real.remote(function)
        calls = self

        class Noted:
            def options(self, **options):
                sender = handle.options(**options)

                class Sender:
                    def remote(self, task, *args):
                        calls.kinds.append(task.kind)
                        return sender.remote(task, *args)
                return Sender()
        return Noted()


def test_serve_cluster_runs_every_kind_of_job_on_ray(local_ray, tmp_path, content_img, style_img,
                                                      monkeypatch):
    """An image, a contact sheet and a video, each sent to Ray as its task; nothing runs in
    the server's process (the local runner would fail), and each result comes back whole."""
    pytest.importorskip("fastapi", reason="the service extra is not installed")
    av = pytest.importorskip("av")
    pytest.importorskip("cv2")
    from nstyle.exec.local import LocalTaskRunner
    from nstyle.service.settings import ServiceSettings
    from tests.support.clips import panned, texture, write_video
    from tests.support.service import FAST, client_for, encode, files, wait_finished

    def not_here(*args, **kwargs):
        raise AssertionError("a job ran in the server's process")

    monkeypatch.setattr(LocalTaskRunner, "run", not_here)
    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0, cluster="auto")
    content, style = encode(content_img), encode(style_img)
    clip = write_video(tmp_path / "walk.mp4", panned(texture(96, 48), 3, 2), fps=15).read_bytes()
    with client_for(settings) as client:
        manager = client.app.state.manager
        manager.runner.ray = noted = RemoteCalls(manager.runner.ray)
        image = client.post("/api/jobs", files=files(content, style), data=FAST).json()
        sheet = client.post("/api/sheets", files=files(content, style),
                            data={"style_weights": "1e3,1e5", "size": "32", "iterations": "2"}).json()
        video = client.post("/api/videos", data={"size": "32", "iterations": "2", "frame_iterations": "1"},
                            files=[("clip", ("walk.mp4", clip, "video/mp4")),
                                   ("style", ("style1.png", style, "image/png"))]).json()
        assert [image["kind"], sheet["kind"], video["kind"]] == ["image", "sheet", "video"]
        done = {kind: wait_finished(client, view["id"]) for kind, view in
                (("image", image), ("sheet", sheet), ("video", video))}
        for kind, view in done.items():
            assert view["state"] == "succeeded", (kind, view["error"])
        assert noted.kinds == ["image", "sheet", "video"]
        assert done["sheet"]["iterations"] == 2 * 2 and done["video"]["iterations"] == 2 + 2 * 1
        sheet_png = client.get(done["sheet"]["links"]["result"])
        assert sheet_png.status_code == 200 and sheet_png.content.startswith(b"\x89PNG")
        mp4 = client.get(done["video"]["links"]["result"])
        assert mp4.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(mp4.content)) as container:
            assert len(list(container.decode(video=0))) == 3
        assert client.get(done["video"]["links"]["preview"]).status_code == 200  # the poster
        record = client.get(done["video"]["links"]["record"]).json()
        assert record["job"]["id"] == video["id"] and len(record["frames"]) == 3

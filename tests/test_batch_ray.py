"""Ray: a batch as Ray tasks gives the local run's images; the service dispatches jobs to Ray.

One local Ray instance (2 CPUs) is started for the module: its start-up is most of the
time these tests take.
"""

from __future__ import annotations

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
    from nstyle.exec.ray import RayJobRunner
    from nstyle.service.settings import ServiceSettings
    from service_helpers import (ALLOW_LONG, FAST, LONG, client_for, encode, files, wait_finished,
                                 wait_for, wait_running)

    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0, cluster="auto",
                               **ALLOW_LONG)
    content, style = encode(content_img), encode(style_img)
    with client_for(settings) as client:
        assert isinstance(client.app.state.manager.runner, RayJobRunner)
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

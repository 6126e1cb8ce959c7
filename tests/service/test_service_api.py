"""The HTTP API, in process: jobs, the event stream, results, cancel, limits, bad input."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service extra is not installed")

from nstyle.options.config import Config, iter_options  # noqa: E402
from nstyle.errors import BadOption  # noqa: E402
from nstyle.service.settings import ServiceSettings  # noqa: E402
from tests.support.service import (ALLOW_LONG, FAST, LONG, client_for, decode_data_url, encode, events, files,  # noqa: E402
                             job, wait_finished, wait_running)


@pytest.fixture
def images(content_img, style_img, style_img2):
    return encode(content_img), encode(style_img), encode(style_img2)


@pytest.fixture
def settings(tmp_path):
    return ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0, **ALLOW_LONG)


def stored(settings) -> list[str]:
    """Job folders and staging leftovers: what a refused request must not leave behind."""
    root = settings.data_dir
    return sorted(p.name for p in (root / "jobs").iterdir()) + sorted(
        "tmp/" + p.name for p in (root / "tmp").iterdir())


def test_create_stream_result_and_record(settings, images):
    content, style, style2 = images
    with client_for(settings) as client:
        r = client.post("/api/jobs", files=files(content, style, style2),
                        data={**FAST, "style_weight": "1e5", "seed": "3"})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["state"] in ("queued", "running")
        assert r.headers["location"] == f"/api/jobs/{created['id']}"
        assert created["options"] == {**FAST, "style_weight": "1e5", "seed": "3"}
        assert created["config"]["loss"]["style_weight"] == 1e5
        assert [s["name"] for s in created["inputs"]["styles"]] == ["style1.png", "style2.png"]

        stream = events(client, created["id"])
        kinds = [e for e, _ in stream]
        assert kinds[-1] == "end" and stream[-1][1]["state"] == "succeeded"
        progress = [d for e, d in stream if e == "progress"]
        assert progress and progress[-1]["iteration"] == 3 and progress[-1]["iterations"] == 3
        assert all(d["eta"] is not None and "total" in d["losses"] for d in progress)
        previews = [d for e, d in stream if e == "preview"]
        assert previews, kinds
        assert max(decode_data_url(previews[-1]["image"]).size) == 32
        assert "running" in [d["state"] for e, d in stream if e == "state"]

        done = job(client, created["id"])
        assert done["state"] == "succeeded" and done["iterations"] == 3
        assert done["links"]["result"] and done["losses"]["total"] > 0
        r = client.get(done["links"]["result"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert "attachment" in r.headers["content-disposition"]
        result = Image.open(io.BytesIO(r.content))
        assert max(result.size) == 32 and list(result.size) == done["output_size"]

        record = client.get(done["links"]["record"]).json()
        assert record["config"]["loss"]["style_weight"] == 1e5 and record["seed"] == 3
        assert record["iterations"] == 3 and record["job"]["id"] == created["id"]
        assert record["job"]["uploads"] == ["cat.png", "style1.png", "style2.png"]
        assert "style.relu1_1" in record["losses"]

        thumb = client.get(done["inputs"]["content"]["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        assert client.get(done["inputs"]["styles"][1]["original"]).content == style2

        listing = client.get("/api/jobs").json()
        assert listing["total"] == 1 and listing["jobs"][0]["id"] == created["id"]
        # a stream opened after the end replays the final state, and image, at once
        late = events(client, created["id"])
        assert [e for e, _ in late] == ["state", "progress", "preview", "end"]
        assert late[1][1]["iteration"] == 3 and late[1][1]["percent"] == 100.0
        assert late[2][1]["iteration"] == 3
        assert decode_data_url(late[2][1]["image"]).tobytes() == result.convert("RGB").tobytes()


def test_options_are_checked_by_the_config_code(settings, images):
    content, style, _ = images
    expected = pytest.raises(BadOption, Config.from_options, size="big").value
    cases = {
        "size": ("big", str(expected)),
        "style_wieght": ("5", "did you mean style_weight?"),
        "style_weight": ("-1", "style_weight must be a finite number >= 0"),
        "optimizer": ("newton", "optimizer must be one of"),
        "style_loss": ("wasserstein", "style_loss must be one of gram, meancov, neighbors"),
        "style_layers": ("relu9_9", "relu9_9"),
        "init": ("/etc/passwd", "init must be one of content, noise, gray, got '/etc/passwd'"),
        "save_dir": ("/tmp", "names a file on the server"),
        "style_blend_weights": ("1,2,3", "style_blend_weights has 3 weights for 1 style image"),
    }
    with client_for(settings) as client:
        for name, (value, message) in cases.items():
            r = client.post("/api/jobs", files=files(content, style), data={**FAST, name: value})
            assert r.status_code == 400, (name, r.text)
            assert message in r.json()["detail"], (name, r.json())
            assert r.json()["field"] == name, r.json()  # the page shows it next to the field
        big = client.post("/api/jobs", files=files(content, style), data={"size": "4096"})
        assert big.status_code == 400 and "limit of 2048 px" in big.json()["detail"]
        assert client.get("/api/jobs").json()["total"] == 0
    assert stored(settings) == []


def test_bad_images_and_missing_fields(settings, images, tmp_path):
    content, style, _ = images
    truncated = content[: len(content) // 2]
    with client_for(settings) as client:
        def post(file_list, data=FAST):
            return client.post("/api/jobs", files=file_list, data=data)

        r = post(files(b"this is not a picture", style, content_name="notes.txt"))
        assert r.status_code == 400
        assert r.json()["detail"] == ("content image 'notes.txt' is not an image Pillow can read "
                                      "(png, jpg, webp, tiff, ...)")
        r = post(files(b"", style, content_name="empty.png"))
        assert r.status_code == 400 and "is empty (0 bytes)" in r.json()["detail"]
        r = post(files(content, truncated))
        assert r.status_code == 400
        assert "style image 'style1.png' is damaged or truncated" in r.json()["detail"]
        r = post([("style", ("s.png", style, "image/png"))])
        assert r.status_code == 400 and "field 'content'" in r.json()["detail"]
        r = post([("content", ("c.png", content, "image/png"))])
        assert r.status_code == 400 and "no style image was given" in r.json()["detail"]
        assert r.json()["field"] == "style"
        r = post(files(content, style), data={**FAST, "content": "a path"})
        assert r.status_code == 400 and "must be a file upload" in r.json()["detail"]
        r = post(files(content, style) + [("mask", ("i.png", content, "image/png"))])
        assert r.status_code == 400 and "unexpected file field 'mask'" in r.json()["detail"]
        r = client.post("/api/jobs", json={"size": 32})
        assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
        assert client.get("/api/jobs").json()["total"] == 0
        assert client.get("/api/jobs/nosuchjob").status_code == 404
        assert client.get("/api/jobs/nosuchjob/events").status_code == 404
    assert stored(settings) == []


def test_limits_give_clear_4xx_and_store_nothing(tmp_path, content_img, style_img):
    settings = ServiceSettings(data_dir=tmp_path / "data", max_upload_bytes=40_000,
                               max_pixels=5000, max_styles=2, formats=("PNG", "JPEG"))
    small, style = encode(content_img.resize((60, 40))), encode(style_img.resize((50, 50)))
    noisy = Image.effect_noise((150, 150), 80).convert("RGB")  # incompressible: a big PNG
    with client_for(settings) as client:
        def post(file_list):
            return client.post("/api/jobs", files=file_list, data=FAST)

        r = post(files(encode(noisy), style))
        assert r.status_code == 413
        assert "content image 'cat.png' is " in r.json()["detail"]
        assert "kB, over this server's limit of 39 kB per image" in r.json()["detail"]
        r = post(files(encode(content_img.resize((100, 80))), style))  # 8000 px > 5000
        assert r.status_code == 413
        assert "8,000 pixels, over this server's limit of 5,000" in r.json()["detail"]
        r = post(files(small, encode(style_img.resize((50, 50)), "GIF")))
        assert r.status_code == 415 and "is a GIF image; this server takes png, jpeg" in r.json()["detail"]
        r = post(files(small, style, style, style))
        assert r.status_code == 413 and "3 style images, over this server's limit of 2" in r.json()["detail"]
        huge = b"\0" * (settings.max_request_bytes + 1)
        r = client.post("/api/jobs", files=files(huge, style))
        assert r.status_code == 413 and "the request is over this server's limit" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(settings.max_request_bytes // 65536 + 2):
                yield b"x" * 65536
        r = client.post("/api/jobs", content=chunks(),
                        headers={"content-type": "multipart/form-data; boundary=zzz"})
        assert r.status_code == 413 and "the request is over this server's limit" in r.json()["detail"]
        assert client.get("/api/jobs").json()["total"] == 0
        assert stored(settings) == []
        ok = post(files(small, style))
        assert ok.status_code == 201, ok.text
        client.post(f"/api/jobs/{ok.json()['id']}/cancel")


def test_queue_limit_cancel_and_retry(tmp_path, images):
    content, style, _ = images
    settings = ServiceSettings(data_dir=tmp_path / "data", max_queue=1, preview_seconds=0.0,
                               **ALLOW_LONG)
    with client_for(settings) as client:
        running = client.post("/api/jobs", files=files(content, style), data=LONG).json()
        wait_running(client, running["id"], min_iteration=2)
        queued = client.post("/api/jobs", files=files(content, style), data=FAST).json()
        assert queued["state"] == "queued" and queued["queue_position"] == 1
        full = client.post("/api/jobs", files=files(content, style), data=FAST)
        assert full.status_code == 429 and "the queue is full (1 jobs waiting)" in full.json()["detail"]
        assert full.headers["retry-after"]
        assert len(stored(settings)) == 2

        r = client.post(f"/api/jobs/{queued['id']}/cancel")
        assert r.status_code == 202 and r.json()["state"] == "cancelled"
        assert r.json()["error"] == "cancelled before it started"

        r = client.post(f"/api/jobs/{running['id']}/cancel")
        assert r.status_code == 202
        stream = events(client, running["id"])
        end = stream[-1][1]
        assert end["state"] == "cancelled" and end["error"].startswith("cancelled after")
        assert end["links"]["preview"]  # how far it got is kept
        preview = client.get(end["links"]["preview"])
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
        r = client.get(f"/api/jobs/{running['id']}/result")
        assert r.status_code == 409 and "cancelled" in r.json()["detail"]
        assert client.post(f"/api/jobs/{running['id']}/cancel").status_code == 409

        r = client.post(f"/api/jobs/{queued['id']}/retry")
        assert r.status_code == 202 and r.json()["state"] in ("queued", "running")
        assert wait_finished(client, queued["id"])["state"] == "succeeded"
        assert client.post(f"/api/jobs/{queued['id']}/retry").status_code == 409


def test_delete_job_and_files(settings, images):
    content, style, _ = images
    with client_for(settings) as client:
        done = client.post("/api/jobs", files=files(content, style), data=FAST).json()
        wait_finished(client, done["id"])
        folder = settings.data_dir / "jobs" / done["id"]
        assert (folder / "result.png").exists()
        assert client.delete(f"/api/jobs/{done['id']}").status_code == 204
        assert not folder.exists()
        assert client.get(f"/api/jobs/{done['id']}").status_code == 404
        assert client.delete(f"/api/jobs/{done['id']}").status_code == 404

        running = client.post("/api/jobs", files=files(content, style), data=LONG).json()
        wait_running(client, running["id"])
        assert client.delete(f"/api/jobs/{running['id']}").status_code == 204
        assert client.get(f"/api/jobs/{running['id']}").status_code == 404
        # the worker stops within an iteration and the next job runs
        after = client.post("/api/jobs", files=files(content, style), data=FAST).json()
        assert wait_finished(client, after["id"])["state"] == "succeeded"
        assert stored(settings) == [after["id"]]


def test_restart_keeps_finished_requeues_queued_and_flags_crashed(tmp_path, images):
    content, style, _ = images
    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0, **ALLOW_LONG)
    with client_for(settings) as client:
        finished = client.post("/api/jobs", files=files(content, style), data=FAST).json()
        wait_finished(client, finished["id"])
        long_job = client.post("/api/jobs", files=files(content, style), data=LONG).json()
        wait_running(client, long_job["id"])
        waiting = client.post("/api/jobs", files=files(content, style), data=FAST).json()
        assert waiting["state"] == "queued"
    # a clean shutdown put the running job back in the queue, ahead of the waiting one
    db = sqlite3.connect(settings.data_dir / "jobs.sqlite3")
    rows = db.execute("SELECT id, state FROM jobs ORDER BY seq").fetchall()
    db.close()
    assert rows == [(finished["id"], "succeeded"), (long_job["id"], "queued"), (waiting["id"], "queued")]

    with client_for(settings) as client:
        listing = {j["id"]: j for j in client.get("/api/jobs").json()["jobs"]}
        assert set(listing) == {finished["id"], long_job["id"], waiting["id"]}
        assert listing[finished["id"]]["state"] == "succeeded"
        assert client.get(f"/api/jobs/{finished['id']}/result").status_code == 200
        assert listing[long_job["id"]]["state"] in ("queued", "running")
        assert job(client, waiting["id"])["state"] == "queued"
        client.post(f"/api/jobs/{long_job['id']}/cancel")
        assert wait_finished(client, waiting["id"])["state"] == "succeeded"
    # a crash: the process died with a row still saying 'running' (a clean stop never
    # leaves one)
    crashed = long_job
    db = sqlite3.connect(settings.data_dir / "jobs.sqlite3")
    db.execute("UPDATE jobs SET state = 'running', finished = NULL WHERE id = ?", (crashed["id"],))
    db.commit()
    db.close()

    with client_for(settings) as client:
        j = job(client, crashed["id"])
        assert j["state"] == "interrupted"
        assert "the server stopped while this job was running" in j["error"]
        assert client.get("/api/jobs").json()["total"] == 3
        r = client.post(f"/api/jobs/{crashed['id']}/retry")
        assert r.status_code == 202 and r.json()["state"] in ("queued", "running")
        client.post(f"/api/jobs/{crashed['id']}/cancel")


def test_token_guards_every_api_call(tmp_path, images):
    settings = ServiceSettings(data_dir=tmp_path / "data", token="s3cret")
    with client_for(settings) as client:
        for path in ("/api/info", "/api/jobs", "/api/openapi.json", "/api/jobs/x/events"):
            r = client.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in r.json()["detail"]
        assert client.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        content, style, _ = images
        assert client.post("/api/jobs", files=files(content, style)).status_code == 401
        assert stored(settings) == []
        ok = client.get("/api/info", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["token_required"] is True
        assert client.get("/").status_code == 200  # the page holds no data; it asks for the token


def test_openapi_and_info_document_every_option(settings):
    client_opts = [o.name for o in iter_options() if o.section not in ("output", "memory")]
    uploads = {"content", "style", "style_mask", "keep_mask", "init_image", "fine_style", "coarse_style"}
    with client_for(settings) as client:
        schema = client.get("/api/openapi.json").json()
        form = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(form["properties"]) == {*uploads, *client_opts}
        for name in uploads - {"style", "style_mask"}:  # every input file is an upload
            assert form["properties"][name]["format"] == "binary", name
        assert form["properties"]["style_mask"]["items"]["format"] == "binary"
        assert form["properties"]["optimizer"]["enum"] == ["lbfgs", "adam", "adagrad", "sgd"]
        assert form["properties"]["style_weight"]["type"] == "number"
        for path in ("/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/result",
                     "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/record"):
            assert path in schema["paths"], path
        assert "JobView" in schema["components"]["schemas"]
        info = client.get("/api/info").json()
        assert [o["name"] for o in info["options"]] == client_opts
        labels = {o["name"]: o for o in info["options"]}
        assert labels["tv_weight"]["label"] == "Smoothness weight"
        # help for people on the page: labels, not command-line flags
        assert all("--" not in o["help"] + (o["default_text"] or "") for o in info["options"])
        assert "“Output size”" in labels["scales"]["help"]
        assert {i["name"] for i in info["inputs"]} == uploads - {"content", "style"}
        assert info["limits"]["max_iterations"] == settings.max_iterations
        assert info["limits"]["max_styles"] == 5
        page = client.get("/")
        assert page.status_code == 200 and "<title>nstyle" in page.text
        assert "http" not in page.text.replace("http://www.w3.org", "")  # no CDN
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/docs").status_code == 404  # its assets would come from a CDN


def test_serve_command_line(capsys):
    from nstyle.cli.main import main
    from nstyle.service.server import build_parser, settings_from_args

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    assert "--token" in capsys.readouterr().out
    assert main(["serve", "--workers", "0"]) == 2
    assert "workers must be >= 1" in capsys.readouterr().err
    assert main(["serve", "--port", "http"]) == 2
    args = build_parser().parse_args(["--data", "d", "--max-upload-mb", "2", "--max-queue", "3"])
    s = settings_from_args(args)
    assert s.max_upload_bytes == 2 * 2**20 and s.max_queue == 3 and str(s.data_dir) == "d"
    assert json.loads(json.dumps(s.formats)) == ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"]


def test_one_server_per_data_folder(tmp_path):
    from nstyle.service.store import FolderInUse, JobStore

    first = JobStore(tmp_path / "data")
    with pytest.raises(FolderInUse, match="in use by another nstyle server"):
        JobStore(tmp_path / "data")
    first.close()
    again = JobStore(tmp_path / "data")  # free again once the first one is gone
    assert again.count() == 0
    again.close()

"""What a client cannot make the server do: open its files, run unbounded work, decode
unbounded pixels, store long fields, or take a truncated body. Each refusal is a 4xx JSON
answer naming the limit (and the field), and leaves nothing in the data folder."""

from __future__ import annotations

import errno
import io
import json
import sqlite3
import zipfile

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service extra is not installed")

from nstyle.service.settings import ServiceSettings  # noqa: E402
from tests.support.service import BASE_URL, FAST, client_for, encode, events, files, job, wait_finished  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    return ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0)


@pytest.fixture
def images(content_img, style_img):
    return encode(content_img), encode(style_img)


def stored(settings) -> list[str]:
    root = settings.data_dir
    return sorted(p.name for p in (root / "jobs").iterdir()) + sorted(
        "tmp/" + p.name for p in (root / "tmp").iterdir())


def refused(client, settings, status, message, field=None, **kwargs):
    r = client.post("/api/jobs", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert message in body["detail"], body
    if field is not None:
        assert body.get("field") == field, body
    assert stored(settings) == [] and client.get("/api/jobs").json()["total"] == 0
    return body


def test_text_can_never_name_a_file_on_the_server(settings, images):
    content, style = images
    with client_for(settings) as client:
        for name in ("keep_mask", "init_image", "fine_style", "coarse_style", "style_mask", "content"):
            refused(client, settings, 400, f"field {name!r} must be a file upload, not text", name,
                    files=files(content, style), data={**FAST, name: "/dev/zero"})
        for name, value in (("init", "/etc/hostname"), ("save_dir", "/tmp"),
                            ("progression", "/tmp/x.gif")):
            refused(client, settings, 400, name, name, files=files(content, style),
                    data={**FAST, name: value})


@pytest.mark.parametrize("options, message, field", [
    ({"iterations": str(10**30)}, "over this server's limit of 2,000 per job", "iterations"),
    ({"scales": "64,8192"}, "an output size of 8192 px is over this server's limit of 2048 px", "scales"),
    ({"size": "2048", "style_scale": "2"}, "style images 4096 px, over this server's limit", "style_scale"),
    ({"scales": "32,64", "scale_iterations": "1500,900"}, "2,400 iterations (1500+900 over 2 scales)",
     "scale_iterations"),
    ({"size": "2048", "iterations": "1000"}, "asks for 647 million pixel-iterations", "iterations"),
    ({"tile_size": "0"}, "option 'tile_size' is this server's to set", "tile_size"),
    ({"memory_limit": "100000"}, "option 'memory_limit' is this server's to set", "memory_limit"),
    ({"content_layers": "relu4_2," * 100}, "is 800 characters long, over this server's limit of 256",
     "content_layers"),
])
def test_work_and_field_limits(settings, images, options, message, field):
    content, style = images
    with client_for(settings) as client:
        refused(client, settings, 400, message, field, files=files(content, style),
                data={**FAST, **options})


def test_huge_field_and_many_fields_are_refused_as_json(settings, images):
    content, style = images
    with client_for(settings) as client:
        r = client.post("/api/jobs", files=files(content, style),
                        data={**FAST, "content_layers": "x" * 900_000})
        assert r.status_code == 400 and "maximum size" in r.json()["detail"].lower()
        many = {f"f{i}": "1" for i in range(200)}
        r = client.post("/api/jobs", files=files(content, style), data=many)
        assert r.status_code == 400 and "fields" in r.json()["detail"].lower()
        assert stored(settings) == []


def test_pixels_per_request_are_bounded_before_decoding(tmp_path, content_img, style_img):
    settings = ServiceSettings(data_dir=tmp_path / "data", max_request_pixels=6000)
    content, style = encode(content_img), encode(style_img)  # 64x43 + 64x56 pixels
    with client_for(settings) as client:
        refused(client, settings, 413, "6,336 pixels together, over this server's limit of 6,000",
                files=files(content, style), data=FAST)


def test_a_body_cut_before_its_closing_boundary_is_refused(settings, images):
    content, style = images
    boundary = "b0undary"
    parts = [("content", "c.png", content), ("style", "s.png", style)]
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"; filename="{f}"\r\n'
                    f"Content-Type: image/png\r\n\r\n".encode() + d + b"\r\n" for n, f, d in parts)
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="size"\r\n\r\n32\r\n'.encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with client_for(settings) as client:
        refused(client, settings, 400, "ends without its closing boundary", content=body,
                headers=headers)
        whole = body + f"--{boundary}--\r\n".encode()
        r = client.post("/api/jobs", content=whole, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["config"]["image"]["size"] == 32  # the last field was not dropped
        client.post(f"/api/jobs/{r.json()['id']}/cancel")


def test_bad_mask_upload_names_its_field(settings, images):
    content, style = images
    black = encode(Image.new("L", (8, 8), 0))
    with client_for(settings) as client:
        body = refused(client, settings, 400, "all black", "style_mask", data=FAST,
                       files=files(content, style) + [("style_mask", ("m.png", black, "image/png"))])
        assert body["index"] == 0
        refused(client, settings, 400, "2 style masks for 1 style images", "style_mask", data=FAST,
                files=files(content, style) + [("style_mask", ("m.png", content, "image/png"))] * 2)
        refused(client, settings, 400, "keep mask 'k.txt' is not an image", "keep_mask", data=FAST,
                files=files(content, style) + [("keep_mask", ("k.txt", b"text", "text/plain"))])
        refused(client, settings, 400, "fine_style and coarse_style go together", "fine_style",
                data=FAST, files=files(content, style) + [("fine_style", ("f.png", style, "image/png"))])


def test_full_disk_locked_store_and_bugs_answer_json(settings, images, monkeypatch):
    from fastapi.testclient import TestClient

    from nstyle.service.app import create_app

    content, style = images
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False, base_url=BASE_URL) as client:
        store = app.state.manager.store
        real_add = store.add

        def full(sub):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(store, "add", full)
        r = client.post("/api/jobs", files=files(content, style), data=FAST)
        assert r.status_code == 507 and "disk is full" in r.json()["detail"]

        def bug(sub):
            raise RuntimeError("a bug")
        monkeypatch.setattr(store, "add", bug)
        r = client.post("/api/jobs", files=files(content, style), data=FAST)
        assert r.status_code == 500 and r.json()["detail"] == "internal error: RuntimeError: a bug"
        monkeypatch.setattr(store, "add", real_add)

        # another process holds the database: the insert gives up, the files go, 503
        other = sqlite3.connect(settings.data_dir / "jobs.sqlite3", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            r = client.post("/api/jobs", files=files(content, style), data=FAST)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert r.status_code == 503 and "locked by another process" in r.json()["detail"]
        assert r.headers["retry-after"]
        assert stored(settings) == []
        assert client.post("/api/jobs", files=files(content, style), data=FAST).status_code == 201


def _no_server_paths(value, root: str) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _no_server_paths(v, root)
    elif isinstance(value, list):
        for v in value:
            _no_server_paths(v, root)
    elif isinstance(value, str):
        assert root not in value, value  # nor any absolute path but the API's own URLs
        assert not value.startswith("/") or value.startswith("/api/jobs/"), value


def test_masks_keep_mask_and_scale_mixing_work_over_http(settings, images, content_img, style_img2):
    content, style = images
    white = encode(Image.new("L", (16, 16), 255))
    left = Image.new("L", (16, 16), 0)
    left.paste(255, (0, 0, 8, 16))
    with client_for(settings) as client:
        # a keep mask over everything: the result is the photo itself (the mask is used)
        kept = client.post("/api/jobs", data={"size": "32", "iterations": "2"},
                           files=files(content, style) + [("keep_mask", ("all.png", white, "image/png"))]).json()
        assert kept["inputs"]["keep_mask"]["name"] == "all.png"
        assert wait_finished(client, kept["id"])["state"] == "succeeded"
        result = Image.open(io.BytesIO(client.get(kept["links"]["self"] + "/result").content))
        photo = content_img.resize(result.size, Image.Resampling.BICUBIC)
        diff = max(abs(a - b) for a, b in zip(result.convert("L").tobytes(), photo.convert("L").tobytes()))
        assert diff <= 40, diff  # resized the engine's way (antialiased), so not bit-exact

        # a style mask per style (the text 'none' for the second), and a starting image
        two = files(content, style, encode(style_img2)) + [
            ("style_mask", ("left.png", encode(left), "image/png")),
            ("style_mask", (None, b"none")),  # a text part, in its place among the masks
            ("init_image", ("start.png", style, "image/png"))]
        masked = client.post("/api/jobs", files=two, data=FAST)
        assert masked.status_code == 201, masked.text
        view = masked.json()
        assert [m and m["name"] for m in view["inputs"]["style_masks"]] == ["left.png", None]
        assert view["inputs"]["init_image"]["name"] == "start.png"
        assert wait_finished(client, view["id"])["state"] == "succeeded"
        record = client.get(view["links"]["self"] + "/record").json()
        assert record["inputs"]["style_masks"] == ["left.png", None]
        assert record["inputs"]["init_image"] == "start.png"
        _no_server_paths(record, str(settings.data_dir))
        _no_server_paths(job(client, view["id"]), str(settings.data_dir))

        # the paper's scale mixing, with no other style; its iterations count in the total
        mixed = client.post("/api/jobs", data={**FAST, "mix_iterations": "2"},
                            files=[files(content)[0], ("fine_style", ("f.png", style, "image/png")),
                                   ("coarse_style", ("c.png", encode(style_img2), "image/png"))]).json()
        stream = events(client, mixed["id"])
        end = stream[-1][1]
        assert end["state"] == "succeeded", end
        assert end["iterations"] == end["iterations_total"] == 5
        progress = [d for e, d in stream if e == "progress"]
        assert {d["iterations"] for d in progress} == {5}
        bundle = zipfile.ZipFile(io.BytesIO(client.get(end["links"]["bundle"]).content))
        assert sorted(bundle.namelist()) == ["inputs/coarse-style-c.png", "inputs/content-cat.png",
                                             "inputs/fine-style-f.png", "record.json", "result.png"]
        assert json.loads(bundle.read("record.json"))["plan"]["mixed_styles"] is True


def test_totals_come_from_the_plan_and_the_record_keeps_the_history(settings, images):
    content, style = images
    with client_for(settings) as client:
        created = client.post("/api/jobs", files=files(content, style),
                              data={"scales": "32,48", "iterations": "4"}).json()
        stream = events(client, created["id"])
        end = stream[-1][1]
        assert end["state"] == "succeeded" and end["iterations_total"] == 4  # 70% of 4 + 30% of 4
        progress = [d for e, d in stream if e == "progress"]
        assert all(d["iterations"] == 4 and d["percent"] <= 100 for d in progress)
        assert progress[-1]["percent"] == 100.0
        history = client.get(end["links"]["record"]).json()["history"]
        assert history["iteration"] == [1, 2, 3, 4] and history["scale"] == [1, 1, 1, 2]
        assert len(history["total"]) == 4 and all(v > 0 for v in history["total"])
        assert set(history) >= {"content.relu4_2", "style.relu1_1", "elapsed", "phase"}

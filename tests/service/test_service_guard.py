"""The browser as an attacker, and the requests that used to get past the checks: a page
on another site submitting jobs, a DNS-rebinding name reading them, an empty token, an
upload served back as HTML, option values that fail the run, a pixel bomb's status."""

from __future__ import annotations

import struct
import zlib

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")

from nstyle.errors import BadOption  # noqa: E402
from nstyle.service.server import build_parser, settings_from_args  # noqa: E402
from nstyle.service.settings import ServiceSettings  # noqa: E402
from tests.support.service import FAST, client_for, encode, files  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    return ServiceSettings(data_dir=tmp_path / "data")


@pytest.fixture
def images(content_img, style_img):
    return encode(content_img), encode(style_img)


def test_a_page_on_another_site_cannot_submit_jobs(settings, images):
    content, style = images
    with client_for(settings) as client:
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "ftp://127.0.0.1:8000"):
            r = client.post("/api/jobs", files=files(content, style), data=FAST,
                            headers={"Origin": origin})
            assert r.status_code == 403, (origin, r.text)
            assert "another site" in r.json()["detail"]
        assert client.get("/api/jobs").json()["total"] == 0
        # the server's own page (same origin), and a program (no Origin), are let in
        own = client.post("/api/jobs", files=files(content, style), data=FAST,
                          headers={"Origin": "http://127.0.0.1:8000"})
        assert own.status_code == 201, own.text
        assert client.post(f"/api/jobs/{own.json()['id']}/cancel").status_code == 202


def test_a_rebound_name_cannot_read_the_jobs(settings):
    with client_for(settings) as client:
        for host in ("rebind.evil.example:8000", "127.0.0.1.evil.example", "localhost.evil"):
            r = client.get("/api/jobs", headers={"Host": host})
            assert r.status_code == 403, (host, r.text)
            assert "--public-host" in r.json()["detail"]
        assert client.get("/", headers={"Host": "rebind.evil.example:8000"}).status_code == 403
        for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"):
            assert client.get("/api/jobs", headers={"Host": host}).status_code == 200, host


def test_a_public_host_or_a_token_lets_other_names_in(tmp_path):
    named = ServiceSettings(data_dir=tmp_path / "a", public_hosts=("nstyle.example.org",))
    with client_for(named) as client:
        assert client.get("/api/jobs", headers={"Host": "nstyle.example.org"}).status_code == 200
        # a proxy that passes Host on as 127.0.0.1 still lets its public page in
        r = client.get("/api/jobs", headers={"Origin": "https://nstyle.example.org"})
        assert r.status_code == 200, r.text
        assert client.get("/api/jobs", headers={"Host": "evil.example"}).status_code == 403
    token = ServiceSettings(data_dir=tmp_path / "b", token="s3cret")
    with client_for(token) as client:  # the token is what guards it; any name will do
        r = client.get("/api/jobs", headers={"Host": "nstyle.example.org",
                                              "Authorization": "Bearer s3cret"})
        assert r.status_code == 200, r.text
        assert client.get("/api/jobs", headers={"Host": "nstyle.example.org"}).status_code == 401


def test_an_empty_token_is_refused_not_ignored(monkeypatch, tmp_path):
    parser = build_parser()
    monkeypatch.delenv("NSTYLE_TOKEN", raising=False)
    with pytest.raises(BadOption, match="--token is empty"):
        settings_from_args(parser.parse_args(["--token", "", "--data", str(tmp_path)]))
    monkeypatch.setenv("NSTYLE_TOKEN", " ")
    with pytest.raises(BadOption, match="NSTYLE_TOKEN is empty"):
        settings_from_args(parser.parse_args(["--data", str(tmp_path)]))
    monkeypatch.setenv("NSTYLE_TOKEN", "s3cret")
    assert settings_from_args(parser.parse_args(["--data", str(tmp_path)])).token == "s3cret"
    with pytest.raises(ValueError, match="token is empty or has spaces"):
        ServiceSettings(token="two words")
    exposed = settings_from_args(parser.parse_args(["--host", "192.168.1.5", "--public-host",
                                                    "nstyle.lan", "--data", str(tmp_path)]))
    assert exposed.public_hosts == ("nstyle.lan", "192.168.1.5")


def test_uploads_come_back_as_their_real_format_never_sniffed(settings, images):
    content, style = images
    with client_for(settings) as client:
        created = client.post("/api/jobs", data=FAST, files=[
            ("content", ("evil.html", content, "text/html")),
            ("style", ("s.svg", encode_jpeg(style), "image/svg+xml"))]).json()
        client.post(f"/api/jobs/{created['id']}/cancel")
        r = client.get(created["inputs"]["content"]["original"])
        assert r.status_code == 200 and r.content == content
        assert r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "evil.html" in r.headers["content-disposition"]  # its name, for a download
        r = client.get(created["inputs"]["styles"][0]["original"])
        assert r.headers["content-type"] == "image/jpeg"
        for url in ("/", "/api/info", "/api/jobs/nope"):
            headers = client.get(url).headers
            assert headers["x-content-type-options"] == "nosniff", url
            assert headers["x-frame-options"] == "DENY", url


def encode_jpeg(png: bytes) -> bytes:
    import io

    from PIL import Image

    return encode(Image.open(io.BytesIO(png)).convert("RGB"), "JPEG")


@pytest.mark.parametrize("name, value", [("history_size", "200000000"), ("history_size", str(10**30)),
                                         ("lr", "1e308"), ("seed", str(10**30))])
def test_option_values_the_run_cannot_take_are_refused(settings, images, name, value):
    content, style = images
    with client_for(settings) as client:
        r = client.post("/api/jobs", files=files(content, style),
                        data={**FAST, "init": "noise", name: value})
        assert r.status_code == 400, r.text
        assert r.json()["field"] == name and f"{name} must be" in r.json()["detail"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height and holds no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_pixel_bomb_is_413_as_documented(settings, images):
    content, style = images
    with client_for(settings) as client:
        for side in (6000, 30000):  # over our limit; over Pillow's own bomb limit too
            r = client.post("/api/jobs", data=FAST, files=[
                ("content", ("bomb.png", png_header_only(side, side), "image/png")),
                ("style", ("s.png", style, "image/png"))])
            assert r.status_code == 413, r.text
            assert f"{side * side:,} pixels" in r.json()["detail"], r.text
            assert r.json()["field"] == "content"


def test_forms_read_at_once_are_bounded_and_the_rest_wait_then_503(tmp_path, images, monkeypatch):
    import threading

    from nstyle.service.routes import jobs as job_routes

    content, style = images
    settings = ServiceSettings(data_dir=tmp_path / "data", form_slots=1, form_wait_seconds=0.5)
    inside, release = threading.Event(), threading.Event()
    real_check = job_routes.check_submission

    def slow_check(*args, **kwargs):
        inside.set()
        release.wait(30)
        return real_check(*args, **kwargs)
    monkeypatch.setattr(job_routes, "check_submission", slow_check)
    with client_for(settings) as client:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=client.post(
            "/api/jobs", files=files(content, style), data=FAST)))
        worker.start()
        assert inside.wait(30)
        r = client.post("/api/jobs", files=files(content, style), data=FAST)
        assert r.status_code == 503, r.text
        assert "reading 1 other uploads" in r.json()["detail"] and r.headers["retry-after"]
        release.set()
        worker.join(60)
        assert first["r"].status_code == 201, first["r"].text
        assert client.get("/api/jobs").json()["total"] == 1


def test_a_request_holds_one_upload_in_memory_at_a_time(tmp_path):
    """Six 1.6 MB images are checked and stored with the memory of about one of them."""
    import io
    import tracemalloc

    import numpy as np
    from PIL import Image

    from nstyle.service.store import JobStore
    from nstyle.service.uploads import Upload, check_submission

    noise = np.random.default_rng(0).integers(0, 256, (730, 730, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise))
    uploads = []
    for i, name in enumerate(["content"] + ["style"] * 5):
        f = open(tmp_path / f"{i}.png", "w+b")
        f.write(data)
        uploads.append(Upload(name, f"{i}.png", f, len(data), i))
    settings = ServiceSettings(data_dir=tmp_path / "data")
    store = JobStore(settings.data_dir)
    tracemalloc.start()
    try:
        sub = check_submission(uploads, [("size", "32", 0)], settings)
        store.add(sub)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        for u in uploads:
            u.file.close()
    assert len(data) > 1_500_000 and peak < 2.5 * len(data), (peak, len(data))
    assert len(sub.files) == 6


def test_a_huge_list_offset_is_a_4xx_not_a_500(settings):
    """Found by bench/fuzz_service.py: SQLite's integers end at 2**63."""
    with client_for(settings) as client:
        r = client.get("/api/jobs", params={"offset": str(10**30)})
        assert r.status_code == 422 and r.json()["detail"], r.text
        assert client.get("/api/jobs", params={"offset": "1000"}).json()["jobs"] == []

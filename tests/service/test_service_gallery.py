"""The page's built-in pictures and estimate, through the API."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service extra is not installed")

from nstyle.core import estimate  # noqa: E402
from nstyle.io import gallery, speed  # noqa: E402
from nstyle.options.config import Config  # noqa: E402
from nstyle.service.settings import ServiceSettings  # noqa: E402
from tests.support.service import client_for  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    return ServiceSettings(data_dir=tmp_path / "data", workers=1)


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """A machine whose speed is known: 0.1 s + 10 s per megapixel per iteration."""
    monkeypatch.setenv("NSTYLE_CACHE_DIR", str(tmp_path / "cache"))
    record = estimate.SpeedRecord()
    record.add([estimate.StepSample(mp, 10, 10 * (0.1 + 10 * mp), 0.0) for mp in (0.01, 0.1)], 2.0)
    speed.save_record(speed.machine_key(Config()), record)
    return record.speed()


def test_the_paintings_are_listed_and_served_by_name(settings):
    with client_for(settings) as client:
        listed = client.get("/api/styles").json()
        assert [p["name"] for p in listed] == [p.name for p in gallery.PAINTINGS]
        first = listed[0]
        assert first["title"] == "The Starry Night" and first["image"] == "/api/styles/starry-night/image"
        answer = client.get(first["image"])
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert answer.content == gallery.find("starry-night").read_bytes()


@pytest.mark.parametrize("name", ["starry-nite", "..%2F..%2Fcli.py", "starry_night.jpg", "PROVENANCE.md"])
def test_only_names_of_the_table_are_served(settings, name):
    with client_for(settings) as client:
        answer = client.get(f"/api/styles/{name}/image")
        assert answer.status_code == 404 and "import" not in answer.text
        if "%2F" not in name:  # (a slash never reaches the route at all)
            assert "no built-in painting" in answer.json()["detail"]
        if name == "starry-nite":
            assert "did you mean 'starry-night'?" in answer.json()["detail"]


def test_the_sample_photo_is_a_real_photo(settings):
    with client_for(settings) as client:
        answer = client.get("/api/samples/photo")
    assert answer.status_code == 200
    photo = Image.open(io.BytesIO(answer.content))
    assert photo.format == "JPEG" and photo.size == (451, 300)  # scikit-image's cat


def test_the_estimate_follows_size_and_iterations(settings, measured):
    with client_for(settings) as client:
        small = client.get("/api/estimate", params={"width": 400, "height": 300, "size": "128"}).json()
        big = client.get("/api/estimate", params={"width": 400, "height": 300, "size": "256",
                                                  "iterations": "200"}).json()
    assert small["measuring"] is False and small["output_size"] == [128, 96] and small["iterations"] == 100
    assert small["seconds"] == pytest.approx(2.0 + 100 * measured.iteration_seconds(128 * 96 / 1e6), abs=0.1)
    assert small["text"] == estimate.describe(small["seconds"])
    assert big["iterations"] == 200 and big["seconds"] > 2 * small["seconds"]


def test_a_bad_option_is_refused_at_its_field(settings, measured):
    with client_for(settings) as client:
        answer = client.get("/api/estimate", params={"width": 400, "height": 300, "iterations": "0"})
        assert answer.status_code == 400 and answer.json()["field"] == "iterations"
        answer = client.get("/api/estimate", params={"width": 400, "height": 300, "size": "4096"})
        assert answer.status_code == 400 and "over this server's limit" in answer.json()["detail"]


def test_an_unmeasured_server_measures_once_in_the_background(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE_DIR", str(tmp_path / "cache"))
    calls, release = [], threading.Event()

    def slow_measure(config):
        calls.append(config)
        release.wait(10)

    monkeypatch.setattr(speed, "measure", slow_measure)
    with client_for(settings) as client:
        for _ in range(3):  # asked again while measuring: not measured twice
            answer = client.get("/api/estimate", params={"width": 40, "height": 30}).json()
            assert answer == {"seconds": None, "text": None, "measuring": True}
        release.set()
    assert len(calls) == 1

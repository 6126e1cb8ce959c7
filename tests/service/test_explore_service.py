"""The contact sheet through the service: POST /api/sheets makes one job in the queue."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service extra is not installed")

from nstyle.service.settings import ServiceSettings  # noqa: E402
from tests.support.service import client_for, decode_data_url, encode, events, files, job  # noqa: E402


@pytest.fixture
def images(content_img, style_img, style_img2):
    return encode(content_img), encode(style_img), encode(style_img2)


def test_sheet_job_runs_every_cell_and_serves_the_sheet(tmp_path, images):
    content, style, style2 = images
    settings = ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0)
    with client_for(settings) as client:
        r = client.post("/api/sheets", files=files(content, style, style2),
                        data={"style_weights": "1e3,1e5", "size": "32", "iterations": "2"})
        assert r.status_code == 201, r.text
        view = r.json()
        assert view["options"]["sheet_style_weights"] == "1000,1e5"
        stream = events(client, view["id"])
        kinds = [e for e, _ in stream]
        assert kinds[-1] == "end" and stream[-1][1]["state"] == "succeeded", stream[-1][1]["error"]
        progress = [d for e, d in stream if e == "progress"]
        assert progress[-1]["iterations"] == 4 * 2 and progress[-1]["phase"] == "sheet"
        previews = [decode_data_url(d["image"]) for e, d in stream if e == "preview"]
        finished = job(client, view["id"])
        result = client.get(finished["links"]["result"])
        assert result.status_code == 200
        sheet = Image.open(io.BytesIO(result.content))
        assert list(sheet.size) == finished["output_size"] and previews[-1].size == sheet.size
        record = json.loads(client.get(finished["links"]["record"]).text)
        assert record["kind"] == "contact_sheet" and len(record["cells"]) == 4
        assert record["rows"] == ["style1", "style2"] and record["style_weights"] == [1e3, 1e5]
        assert record["job"]["id"] == view["id"] and "inputs" in record
        assert record["for_size"] == 512 and record["content_weight_factor"] > 1
        assert finished["iterations"] == 8


@pytest.mark.parametrize("data, extra, field, message", [
    ({"style_weights": "1e4,nope"}, [], "style_weights", "'nope' is not a number"),
    ({"style_weights": "0"}, [], "style_weights", "finite numbers > 0"),
    ({"style_weight": "1e5"}, [], "style_weight", "cannot be set for a contact sheet"),
    ({}, [("keep_mask", ("k.png", b"x", "image/png"))], "keep_mask", "takes only the photo"),
    ({"iterations": "400", "style_weights": "1,2,3,4,5,6"}, [], "iterations", "over this server's limit"),
    ({"size": "5000"}, [], "size", "over this server's limit of 2048 px"),
    ({"for_size": "9999"}, [], "for_size", "for_size must be an integer in 32..2048"),
])
def test_bad_sheets_are_refused_with_the_field_and_store_nothing(tmp_path, images, data, extra,
                                                                 field, message):
    content, style, _ = images
    settings = ServiceSettings(data_dir=tmp_path / "data")
    with client_for(settings) as client:
        r = client.post("/api/sheets", files=files(content, style) + extra, data=data)
        assert r.status_code == 400, r.text
        assert message in r.json()["detail"] and r.json().get("field") == field, r.json()
        assert client.get("/api/jobs").json()["total"] == 0

"""Shared by the service tests: tiny images as upload bytes, an in-process client, waits."""

from __future__ import annotations

import base64
import io
import json
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from PIL import Image

#: the fastest real run: 32 px, a few iterations
FAST = {"size": "32", "iterations": "3"}
#: a run that would take minutes: tests cancel it (it holds the worker meanwhile)
LONG = {"size": "32", "iterations": "100000"}
#: server settings that let LONG in (the default --max-iterations refuses it)
ALLOW_LONG = {"max_iterations": 10**6}


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def files(content: bytes, *styles: bytes, content_name: str = "cat.png") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("content", (content_name, content, "image/png"))]
    out += [("style", (f"style{i + 1}.png", s, "image/png")) for i, s in enumerate(styles)]
    return out


#: what the in-process client calls the server: a loopback name, as a browser on this
#: machine would (a server without a token refuses others: ``nstyle.service.guard``)
BASE_URL = "http://127.0.0.1:8000"


@contextmanager
def client_for(settings) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from nstyle.service.app import create_app

    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        yield client


def events(client, job_id: str, timeout: float = 120.0) -> list[tuple[str, Any]]:
    """Every (event, data) of a job's stream until it ends."""
    out = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[len("data: "):])))
                if event in ("end", "deleted"):
                    break
            assert time.monotonic() < deadline, f"stream did not end within {timeout} s"
    return out


def wait_for(check: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def job(client, job_id: str) -> dict[str, Any]:
    r = client.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_running(client, job_id: str, min_iteration: int = 1) -> dict[str, Any]:
    def check():
        j = job(client, job_id)
        return j if j["state"] == "running" and j["progress"] and \
            j["progress"]["iteration"] >= min_iteration else None
    return wait_for(check, what=f"job {job_id} to run")


def wait_finished(client, job_id: str) -> dict[str, Any]:
    return wait_for(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
        job(client, job_id)), what=f"job {job_id} to finish")


def decode_data_url(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))

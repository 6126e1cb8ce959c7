"""The fuzzing of the HTTP API (shared by tests/service/test_service_fuzz.py and
bench/fuzz_service.py): schemathesis generates requests from the API's own OpenAPI
schema, Hypothesis drives them, and every answer is checked."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import max_response_time, not_a_server_error

from nstyle.service.settings import ServiceSettings

#: what a non-JSON answer may be: the page, event streams and files
NOT_JSON = ("text/event-stream", "image/", "video/", "application/zip")
#: longest wait for one answer: a hang fails the run
TIMEOUT_SECONDS = 20


@contextmanager
def fuzz_app(data_dir: Path) -> Iterator[Any]:
    """The app on a fresh data folder, and its schema: schemathesis runs the app's lifespan
    (the job manager) from its first request until ``shutdown_lifespans``. Jobs it accepts
    are tiny (the fuzzer's content images are seldom valid ones, its sizes seldom small)."""
    from schemathesis.python.asgi import shutdown_lifespans

    from nstyle.service.app import create_app

    # schemathesis's in-process client calls the server 'testserver': a name it is given
    app = create_app(ServiceSettings(data_dir=data_dir, max_iterations=200,
                                     max_megapixel_iterations=1.0, public_hosts=("testserver",)))
    try:
        yield app, schemathesis.openapi.from_asgi("/api/openapi.json", app)
    finally:
        shutdown_lifespans()  # the workers stop; the data folder can go


def sample_images() -> list[bytes]:
    """Small real images of each format the server takes: with them, a generated request
    gets past the image checks to the options' (random bytes alone never would)."""
    import io

    from PIL import Image

    out = []
    for fmt, mode, size in (("PNG", "RGB", (40, 30)), ("JPEG", "RGB", (32, 32)), ("GIF", "P", (24, 36)),
                            ("WEBP", "RGB", (30, 20)), ("PNG", "L", (16, 16))):
        buf = io.BytesIO()
        Image.linear_gradient("L").resize(size).convert(mode).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def use_real_images() -> None:
    """File fields ('format: binary') get a real image three times in four, else bytes."""
    schemathesis.openapi.format("binary", st.one_of(
        st.sampled_from(sample_images()), st.sampled_from(sample_images()),
        st.sampled_from(sample_images()), st.binary(max_size=64)))


def answers_json_with_a_detail(response) -> None:
    """Every error is JSON with a 'detail'; every other answer is JSON too, or the stream
    or file its route serves."""
    kind = response.headers.get("content-type", [""])
    kind = kind[0] if isinstance(kind, list) else kind
    if response.status_code == 204 or kind.startswith(NOT_JSON):
        return
    assert kind.startswith("application/json"), f"{response.status_code} answered as {kind!r}"
    body = json.loads(response.content)
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("detail"), (str, list)), body


def fuzz_operations(data_dir: Path, examples: int, seed: int = 0, form_examples: int = 0
                    ) -> tuple[dict[str, int], dict[str, int]]:
    """Fuzz every operation of the schema ``examples`` times (the forms that submit jobs
    ``form_examples`` times, when more); returns {operation: cases}
    and {final state: jobs} of the jobs it got accepted (those the fuzzing left).
    Raises (with the failing request) at the first answer that breaks a check, and, once
    the jobs it got accepted have run, if one of them failed as an internal error (an
    option value the checks let through that the run could not take)."""
    from fastapi.testclient import TestClient

    ran: dict[str, int] = {}
    use_real_images()
    with fuzz_app(data_dir) as (app, schema):
        client = TestClient(app, base_url="http://testserver")  # the lifespan is schemathesis's
        images = sample_images()
        job_ids = [client.post("/api/jobs", data={"size": "32", "iterations": "1"}, files=[
            ("content", ("c.png", images[0])), ("style", ("s.jpg", images[1]))]).json()["id"]
            for _ in range(2)]
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            ran[label] = 0
            # half the job ids are real ones, so that the routes go past their 404
            real_ids = st.sampled_from([None, *job_ids])
            keys = st.sampled_from([None, "content", "style-1", "clip"])

            is_form = operation.method.upper() == "POST" and "{" not in operation.path

            @given(case=operation.as_strategy(), job_id=real_ids, key=keys, small=st.booleans())
            @settings(max_examples=max(examples, form_examples) if is_form else examples,
                      deadline=None, derandomize=seed == 0,
                      suppress_health_check=list(HealthCheck), database=None)
            def one(case, job_id, key, small) -> None:
                if small and isinstance(case.body, dict):
                    # half the forms ask for a run that fits the limits, so that the other
                    # options' values reach the engine when the checks let them through
                    case.body.update(size=32, iterations=2)
                    case.body.pop("scales", None)
                params = case.path_parameters or {}
                if job_id is not None and "job_id" in params:
                    params["job_id"] = job_id
                if key is not None and "key" in params:
                    params["key"] = key
                response = case.call(timeout=TIMEOUT_SECONDS)
                case.validate_response(response, checks=[not_a_server_error, max_response_time])
                answers_json_with_a_detail(response)
                ran[label] += 1
            one()
        jobs = wait_for_jobs(client)
    failed = [(j["id"], j["options"], j["error"]) for j in jobs
              if j["state"] == "failed" and str(j["error"]).startswith("internal error")]
    assert not failed, f"accepted jobs that failed as internal errors: {failed}"
    states: dict[str, int] = {}
    for j in jobs:
        states[j["state"]] = states.get(j["state"], 0) + 1
    return ran, states


def wait_for_jobs(client, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every job, once none is queued or running (or ``timeout`` has passed)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        jobs = client.get("/api/jobs?limit=500").json()["jobs"]
        if time.monotonic() > deadline or all(j["state"] not in ("queued", "running") for j in jobs):
            return jobs
        time.sleep(0.2)

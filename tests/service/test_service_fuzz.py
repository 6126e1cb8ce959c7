"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis on
Hypothesis): every route, with generated paths, queries and multipart bodies, answers a
JSON 2xx/4xx (or its documented stream or file), never a 500 and never a hang. A short run
here; ``bench/fuzz_service.py`` runs the same checks longer."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")
pytest.importorskip("schemathesis", reason="the test extra is not installed")

from tests.support.fuzz import fuzz_operations  # noqa: E402


def test_every_route_answers_json_4xx_never_500(tmp_path):
    ran, jobs = fuzz_operations(tmp_path, examples=10, form_examples=30)
    # every route of the schema was fuzzed, job submission included
    assert {"GET /api/info", "POST /api/jobs", "GET /api/jobs/{job_id}", "POST /api/videos",
            "POST /api/sheets", "DELETE /api/jobs/{job_id}"} <= set(ran), ran
    assert sum(jobs.values()) > 0, "no generated job was accepted: the run reached no engine"

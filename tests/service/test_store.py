"""The job store: a job's kind is a column of its own, also for records an older nstyle
wrote (which knew a sheet or a video only by one of its options)."""

from __future__ import annotations

import json
import sqlite3

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")

from nstyle.service.store import SCHEMA_VERSION, JobStore  # noqa: E402

#: the jobs table as schema 2 (nstyle before the kind column) made it
SCHEMA_2 = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    created REAL NOT NULL, started REAL, finished REAL, options TEXT NOT NULL,
    config TEXT NOT NULL, inputs TEXT NOT NULL, iterations INTEGER, iterations_total INTEGER,
    losses TEXT, output_size TEXT, error TEXT, error_status INTEGER);
PRAGMA user_version=2;
"""


def test_records_of_schema_2_get_their_kind_from_the_marker_options(tmp_path):
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.executescript(SCHEMA_2)
    for job_id, options in (("a", {"size": "64"}), ("b", {"sheet_style_weights": "1000,1e5"}),
                            ("c", {"video_options": "{}"})):
        db.execute("INSERT INTO jobs (id, state, created, options, config, inputs) VALUES (?, ?, ?, ?, ?, ?)",
                   (job_id, "succeeded", 1.0, json.dumps(options), "{}", "{}"))
    db.commit()
    db.close()
    store = JobStore(tmp_path)
    try:
        assert {job_id: store.get(job_id).kind for job_id in "abc"} == {"a": "image", "b": "sheet", "c": "video"}
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3

"""The worker survives every exception: a store locked by another process, a full disk,
a bug in its own bookkeeping. The job fails with a message (or waits for its record to be
written), and the queue goes on."""

from __future__ import annotations

import errno
import logging
import sqlite3
import time

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")

from nstyle.service import jobs as jobs_module  # noqa: E402
from nstyle.service.settings import ServiceSettings  # noqa: E402
from nstyle.service.store import BUSY_TIMEOUT  # noqa: E402
from tests.support.service import FAST, client_for, encode, files, job, wait_finished, wait_for  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    return ServiceSettings(data_dir=tmp_path / "data", preview_seconds=0.0)


@pytest.fixture
def upload(content_img, style_img):
    return files(encode(content_img), encode(style_img))


def test_worker_outlasts_a_database_lock_held_by_another_process(settings, upload, caplog):
    caplog.set_level(logging.WARNING, logger="nstyle.service")
    with client_for(settings) as client:
        first = client.post("/api/jobs", files=upload, data={"size": "32", "iterations": "5"}).json()
        second = client.post("/api/jobs", files=upload, data=FAST).json()
        wait_for(lambda: job(client, first["id"])["state"] == "running", what="the first job to start")
        other = sqlite3.connect(settings.data_dir / "jobs.sqlite3", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock ...
        try:
            live = client.app.state.manager.live(first["id"])
            wait_for(lambda: live.iterations and live.iteration == live.iterations,
                     what="the first job's last iteration")
            time.sleep(BUSY_TIMEOUT + 1.5)  # ... for longer than a statement waits for it
            # readers still work (WAL); a write answers 503 in JSON, not a plain 500
            assert job(client, first["id"])["state"] == "running"
            r = client.post(f"/api/jobs/{second['id']}/cancel")
            assert r.status_code == 503 and "locked by another process" in r.json()["detail"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert wait_finished(client, first["id"])["state"] == "succeeded"
        assert wait_finished(client, second["id"])["state"] == "succeeded"  # the queue went on
    assert any("cannot record" in r.message and "retrying" in r.message for r in caplog.records)


def test_full_disk_fails_the_job_with_a_message_and_the_queue_goes_on(settings, upload, monkeypatch):
    real_save = jobs_module.save_bytes
    calls = []

    def disk_full_once(data, path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(data, path)

    monkeypatch.setattr(jobs_module, "save_bytes", disk_full_once)
    with client_for(settings) as client:
        failed = client.post("/api/jobs", files=upload, data=FAST).json()
        after = client.post("/api/jobs", files=upload, data=FAST).json()
        end = wait_finished(client, failed["id"])
        assert end["state"] == "failed"
        assert end["error"].startswith("the server's disk is full: the result could not be written")
        assert str(settings.data_dir) not in end["error"]
        assert wait_finished(client, after["id"])["state"] == "succeeded"
        r = client.post(f"/api/jobs/{failed['id']}/retry")  # space is back: it runs again
        assert r.status_code == 202
        assert wait_finished(client, failed["id"])["state"] == "succeeded"


def test_store_refusing_the_outcome_is_retried_until_it_takes_it(settings, upload, monkeypatch):
    with client_for(settings) as client:
        store = client.app.state.manager.store
        real_update = store.update
        refusals = []

        def full_then_fine(job_id, **values):
            if values.get("state") == "succeeded" and len(refusals) < 3:
                refusals.append(job_id)
                raise sqlite3.OperationalError("database or disk is full")
            return real_update(job_id, **values)

        monkeypatch.setattr(store, "update", full_then_fine)
        first = client.post("/api/jobs", files=upload, data=FAST).json()
        second = client.post("/api/jobs", files=upload, data=FAST).json()
        assert wait_finished(client, first["id"])["state"] == "succeeded"
        assert wait_finished(client, second["id"])["state"] == "succeeded"
        assert refusals == [first["id"]] * 3


def test_a_bug_in_the_bookkeeping_does_not_kill_the_worker(settings, upload, monkeypatch):
    with client_for(settings) as client:
        manager = client.app.state.manager
        real_finish = manager._finish
        broken = []

        def finish_that_breaks_once(job_id, live, outcome):
            if not broken:
                broken.append(job_id)
                raise RuntimeError("a bug")
            return real_finish(job_id, live, outcome)

        monkeypatch.setattr(manager, "_finish", finish_that_breaks_once)
        first = client.post("/api/jobs", files=upload, data=FAST).json()
        wait_for(lambda: broken, what="the broken bookkeeping")
        second = client.post("/api/jobs", files=upload, data=FAST).json()
        assert wait_finished(client, second["id"])["state"] == "succeeded"
        # the job whose bookkeeping broke is failed with the reason, and can be retried
        broke = job(client, first["id"])
        assert broke["state"] == "failed" and broke["error"] == "internal error: RuntimeError: a bug"
        assert client.post(f"/api/jobs/{first['id']}/retry").status_code == 202
        assert wait_finished(client, first["id"])["state"] == "succeeded"

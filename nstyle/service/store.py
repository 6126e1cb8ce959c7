"""Job records in SQLite and job files in one folder per job, under the data folder.

    DATA/jobs.sqlite3            one row per job (state, options, inputs, outcome)
    DATA/jobs/<id>/              content.<ext>, style-1.<ext>, ... as uploaded,
                                 *.thumb.png, result.png, result.json, preview.png
    DATA/tmp/                    a new job's folder is written here, then renamed into
                                 jobs/, so a job folder is either complete or absent

The store knows nothing of queues or threads beyond its own lock: ``jobs.JobManager``
decides what happens to a job, the store only remembers it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nstyle.service.uploads import Submission
from nstyle.tasks.base import POSTER_PNG, RESULT_PNG, SHEET, VIDEO

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted")
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order = queue order
    id           TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL,
    kind         TEXT NOT NULL DEFAULT 'image',  -- image, sheet or video (nstyle.tasks.base)
    created      REAL NOT NULL,
    started      REAL,
    finished     REAL,
    options      TEXT NOT NULL,   -- JSON: the options as the client gave them
    config       TEXT NOT NULL,   -- JSON: the full validated config (Config.to_dict)
    inputs       TEXT NOT NULL,   -- JSON: stored file names, user file names, sizes
    iterations   INTEGER,         -- iterations run, once finished
    iterations_total INTEGER,     -- iterations planned (the run's plan: every scale), once known
    losses       TEXT,            -- JSON: final loss terms of a succeeded job
    output_size  TEXT,            -- JSON: [width, height] of the result
    error        TEXT,            -- message of a failed/cancelled/interrupted job
    error_status INTEGER          -- the HTTP status that error maps to
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""

RESULT_FILE, RECORD_FILE, PREVIEW_FILE = RESULT_PNG, "result.json", POSTER_PNG
#: before schema 3, a job's kind was known by one of its options: the contact sheet's
#: style weights, the video's options
LEGACY_KIND_MARKERS = {SHEET: "sheet_style_weights", VIDEO: "video_options"}
#: seconds a statement waits for another connection's lock before it fails
BUSY_TIMEOUT = 2.0
_JSON_COLUMNS = ("options", "config", "inputs", "losses", "output_size")


@dataclass
class JobRow:
    id: str
    seq: int
    state: str
    kind: str
    created: float
    started: Optional[float]
    finished: Optional[float]
    options: dict[str, str]
    config: dict[str, dict[str, Any]]
    inputs: dict[str, Any]
    iterations: Optional[int]
    iterations_total: Optional[int]
    losses: Optional[dict[str, float]]
    output_size: Optional[list[int]]
    error: Optional[str]
    error_status: Optional[int]


class JobStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.jobs_dir = self.root / "jobs"
        self.tmp_dir = self.root / "tmp"
        for d in (self.root, self.jobs_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_folder(self.root)
        self._clear_tmp()
        self._lock = threading.RLock()
        # one connection shared by the server's threads, serialized by the lock; WAL keeps
        # a reader (another process inspecting the file) from blocking the server
        # a short busy timeout: a lock held by another process makes a request answer 503
        # soon and the worker retry (jobs.py), rather than freeze every thread on the lock
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False,
                                   isolation_level=None, timeout=BUSY_TIMEOUT)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise RuntimeError(f"{self.root}: job records of a newer nstyle (schema {found})")
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
            if "iterations_total" not in columns:  # records of schema 1
                self._db.execute("ALTER TABLE jobs ADD COLUMN iterations_total INTEGER")
            if "kind" not in columns:  # records of schema 1 and 2 knew a job's kind by its options
                self._add_kind_column()
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _add_kind_column(self) -> None:
        self._db.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'image'")
        for kind, marker in LEGACY_KIND_MARKERS.items():
            self._db.execute("UPDATE jobs SET kind = ? WHERE json_extract(options, ?) IS NOT NULL",
                             (kind, f"$.{marker}"))

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the folder lock
            self._lock_file = None

    def _clear_tmp(self) -> None:
        """Leftovers of a submission the previous process died in the middle of."""
        for leftover in self.tmp_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    # ---- paths ----------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def file(self, job_id: str, name: str) -> Path:
        return self.job_dir(job_id) / name

    # ---- writing --------------------------------------------------------------------

    def add(self, sub: Submission) -> JobRow:
        """Store a new queued job: its files first (all or nothing), then its row."""
        job_id = uuid.uuid4().hex[:16]
        staging = Path(tempfile.mkdtemp(prefix=f"{job_id}.", dir=self.tmp_dir))
        try:
            inputs = _write_inputs(sub, staging)
            os.replace(staging, self.job_dir(job_id))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO jobs (id, state, kind, created, options, config, inputs) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (job_id, QUEUED, sub.kind, time.time(), json.dumps(sub.options),
                     json.dumps(sub.config.to_dict()), json.dumps(inputs)))
        except BaseException:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
            raise
        row = self.get(job_id)
        assert row is not None
        return row

    def update(self, job_id: str, **values: Any) -> None:
        if not values:
            return
        cols = ", ".join(f"{k} = ?" for k in values)
        params = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v
                  for k, v in values.items()]
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*params, job_id))

    def delete(self, job_id: str) -> None:
        """The row, then the folder: a crash in between leaves a folder, never a dangling row."""
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # ---- reading --------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[JobRow]:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _to_job(row) if row else None

    def list(self, limit: int = 100, offset: int = 0, states: Optional[tuple[str, ...]] = None,
             oldest_first: bool = False) -> list[JobRow]:
        where, params = "", []
        if states:
            where = f"WHERE state IN ({', '.join('?' * len(states))})"
            params = list(states)
        order = "ASC" if oldest_first else "DESC"
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq {order} "
                                    "LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
        return [_to_job(r) for r in rows]

    def count(self, states: Optional[tuple[str, ...]] = None) -> int:
        where, params = "", []
        if states:
            where = f"WHERE state IN ({', '.join('?' * len(states))})"
            params = list(states)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()[0]

    def orphan_folders(self) -> list[Path]:
        """Job folders with no row (a delete interrupted between its two steps)."""
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT id FROM jobs")}
        return [p for p in self.jobs_dir.iterdir() if p.name not in known]


def _write_inputs(sub: Submission, folder: Path) -> dict[str, Any]:
    """Each upload, byte for byte, and its thumbnail; returns the inputs' JSON: per field
    of ``nstyle.io.inputs``, an entry (key, stored file, user's name, size), a list of them
    for styles and style masks (None for a style without a mask)."""
    n_styles = sum(1 for f in sub.files if f.field == "styles")
    inputs: dict[str, Any] = {"content": None, "styles": []}
    for f in sub.files:
        stored = f.key + f.image.ext
        f.image.upload.save(folder / stored)
        (folder / f"{f.key}.thumb.png").write_bytes(f.image.thumbnail)
        entry = {"key": f.key, "file": stored, "name": f.image.name,
                 "width": f.image.width, "height": f.image.height}
        if f.image.frames is not None:
            entry["frames"] = f.image.frames
        if f.field == "style_masks":
            inputs.setdefault("style_masks", [None] * n_styles)[f.index] = entry
        elif f.index is not None:
            inputs[f.field].append(entry)
        else:
            inputs[f.field] = entry
    return inputs


def input_entries(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stored input's entry, content first."""
    out = []
    for value in inputs.values():
        for entry in value if isinstance(value, list) else [value]:
            if entry is not None:
                out.append(entry)
    return out


def _lock_folder(root: Path):
    """Two servers on one data folder would run the same queued jobs twice: refuse the
    second. An OS lock, so it goes away with the process however that ends."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one server per folder is then the user's care
        return None
    f = open(root / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise FolderInUse(f"the data folder {str(root)!r} is in use by another nstyle server; "
                          "stop it or use another --data folder") from None
    return f


class FolderInUse(OSError):
    pass


def _to_job(row: sqlite3.Row) -> JobRow:
    values = dict(row)
    for k in _JSON_COLUMNS:
        if values[k] is not None:
            values[k] = json.loads(values[k])
    return JobRow(**values)

"""Fault scenarios for ``bench/load_service.py --faults``: what an attacker on loopback or
a broken machine can do to a server, measured against real ``nstyle serve`` processes.

    attacks      paths as text fields, unbounded work, server-only memory options, a 900 kB
                 field, a body cut before its closing boundary: each answer's status, whether
                 it is JSON, and that nothing was stored
    decode       8 concurrent requests of small PNGs that decode to 4900x4900 each, while
                 the worker is busy with another job (so what is measured is the checking
                 of submissions): the server's RSS before, at its peak (VmHWM) and after;
                 then the same jobs run, and the RSS after them
    sqlite-lock  another process holds the database's write lock from before a job's last
                 iteration until 12 s after it: what requests answer meanwhile, whether the
                 worker goes on, how soon after the release the outcome is recorded
    full-disk    the data folder on a 24 MB tmpfs, filled while a job runs and kept full
                 until 10 s after its last iteration (needs root to mount; skipped
                 otherwise): the job's outcome, what a submission answers, and whether the
                 queue resumes once space is back

Prints one table per scenario and writes JSON. Standard library only (plus PIL to make the
images), like load_service.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from load_service import free_port, multipart, stop_server, tiny_png, wait_ready

FINAL = ("succeeded", "failed", "cancelled", "interrupted")


def call(url: str, method: str = "GET", body: bytes | None = None, ctype: str | None = None,
         timeout: float = 120) -> tuple[int, dict, str]:
    """(status, JSON body or {}, content type) of one request."""
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status, kind = r.read(), r.status, r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        raw, status, kind = e.read(), e.code, e.headers.get("content-type", "")
    try:
        return status, json.loads(raw or b"{}"), kind
    except ValueError:
        return status, {"raw": raw[:200].decode("latin-1")}, kind


class Server:
    """A real 'nstyle serve' on a free port of 127.0.0.1, with its own data folder."""

    def __init__(self, data_dir: Path, *flags: str, log_dir: Path | None = None) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir or data_dir.parent) / f"server-{self.port}.log"
        self.proc = subprocess.Popen(
            [os.sys.executable, "-m", "nstyle", "serve", "--port", str(self.port), "--data",
             str(data_dir), "--log-level", "warning", *flags],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_ready(self.proc, self.port, self.log)

    def rss_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return -1

    def jobs(self) -> dict[str, dict]:
        return {j["id"]: j for j in call(self.base + "/api/jobs?limit=500")[1]["jobs"]}

    def submit(self, fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[int, dict, str]:
        body, ctype = multipart(fields, files)
        return call(self.base + "/api/jobs", "POST", body, ctype)

    def wait(self, job_id: str, states=FINAL, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = call(f"{self.base}/api/jobs/{job_id}")[1].get("state")
            if state in states:
                return state
            time.sleep(0.2)
        return "TIMEOUT"

    def stop(self) -> None:
        stop_server(self.proc)


def images() -> list[tuple[str, str, bytes]]:
    return [("content", "cat.png", tiny_png("chelsea")), ("style", "hubble.png", tiny_png("hubble_deep_field"))]


# --------------------------------------------------------------------------- scenarios


def attacks(root: Path) -> dict[str, Any]:
    server = Server(root / "attacks")
    fast = {"size": "32", "iterations": "2"}
    cases: dict[str, Callable[[], tuple[int, dict, str]]] = {
        "keep_mask=/dev/zero (text)": lambda: server.submit({**fast, "keep_mask": "/dev/zero"}, images()),
        "style_mask=/etc/passwd (text)": lambda: server.submit({**fast, "style_mask": "/etc/passwd"}, images()),
        "init=/etc/hostname": lambda: server.submit({**fast, "init": "/etc/hostname"}, images()),
        "iterations=10**30": lambda: server.submit({"iterations": str(10**30)}, images()),
        "scales=64,8192": lambda: server.submit({"scales": "64,8192"}, images()),
        "tile_size=0 memory_limit=100000": lambda: server.submit(
            {"tile_size": "0", "memory_limit": "100000"}, images()),
        "content_layers of 900 kB": lambda: server.submit({"content_layers": "relu4_2," * 112_500}, images()),
        "body without closing boundary": lambda: _cut_body(server),
    }
    rows = {}
    try:
        for name, send in cases.items():
            t0 = time.perf_counter()
            status, body, kind = send()
            rows[name] = {"status": status, "json": kind.startswith("application/json"),
                          "detail": body.get("detail", body.get("raw")), "field": body.get("field"),
                          "seconds": round(time.perf_counter() - t0, 3)}
        stored = sorted(p.name for p in (server.data_dir / "jobs").iterdir())
        return {"cases": rows, "jobs_listed": len(server.jobs()), "job_folders": len(stored)}
    finally:
        server.stop()


def _cut_body(server: Server) -> tuple[int, dict, str]:
    body, ctype = multipart({"size": "32"}, images())
    cut = body[: body.rindex(b"--" + ctype.split("boundary=")[1].encode() + b"--")]
    return call(server.base + "/api/jobs", "POST", cut, ctype)


def decode_pressure(root: Path, requests: int = 8) -> dict[str, Any]:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4900, 4900), (120, 90, 60)).save(buf, format="PNG", optimize=True)
    big = buf.getvalue()  # tiny on the wire, 72 MB once decoded
    server = Server(root / "decode", "--max-iterations", "1000000", "--max-megapixel-iterations", "100000")
    try:
        warm = server.submit({"size": "32", "iterations": "1"}, images())[1]
        server.wait(warm["id"])  # the network is loaded: its memory is not what is measured
        busy = server.submit({"size": "32", "iterations": "1000000"}, images())[1]
        server.wait(busy["id"], ("running",))
        before = server.rss_kib()
        out = {"png_bytes": len(big), "rss_before_mib": round(before / 1024)}
        for label, n_styles in (("content + 5 styles (refused by the pixel budget)", 5),
                                ("content + 1 style (accepted, decoded one request at a time)", 1)):
            files = [("content", "c.png", big)] + [("style", f"s{i}.png", big) for i in range(n_styles)]
            statuses: list[int] = []
            barrier = threading.Barrier(requests)

            def one() -> None:
                barrier.wait()
                statuses.append(server.submit({"size": "32", "iterations": "1"}, files)[0])
            t0 = time.perf_counter()
            threads = [threading.Thread(target=one) for _ in range(requests)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            out[label] = {"statuses": sorted(statuses), "seconds": round(time.perf_counter() - t0, 2),
                          "request_mb": round(len(big) * (1 + n_styles) / 1e6, 2),
                          "rss_peak_mib_so_far": round(server.rss_kib("VmHWM") / 1024),
                          "rss_after_mib": round(server.rss_kib() / 1024)}
        out["rss_peak_while_checking_mib"] = round(server.rss_kib("VmHWM") / 1024)
        call(f"{server.base}/api/jobs/{busy['id']}/cancel", "POST")
        for job_id in server.jobs():  # the accepted jobs run: each decodes 2 x 24 MP again
            server.wait(job_id)
        out["rss_after_jobs_ran_mib"] = round(server.rss_kib() / 1024)
        out["rss_peak_mib"] = round(server.rss_kib("VmHWM") / 1024)
        return out
    finally:
        server.stop()


def sqlite_lock(root: Path, hold: float = 12.0) -> dict[str, Any]:
    server = Server(root / "lock")
    try:
        warm = server.submit({"size": "32", "iterations": "1"}, images())[1]
        server.wait(warm["id"])  # the network is loaded: the next job finishes within the lock
        status, first, _ = server.submit({"size": "32", "iterations": "5"}, images())
        second = server.submit({"size": "32", "iterations": "2"}, images())[1]
        server.wait(first["id"], ("running",))
        db = sqlite3.connect(server.data_dir / "jobs.sqlite3", isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        t_lock = time.perf_counter()
        during = {"submit": server.submit({"size": "32", "iterations": "2"}, images()),
                  "cancel the queued job": call(f"{server.base}/api/jobs/{second['id']}/cancel", "POST"),
                  "list jobs": call(server.base + "/api/jobs")}
        # the lock is held for `hold` seconds after the job's last iteration, so that the
        # worker's record of its outcome meets the lock (reads work under it: WAL)
        last_iteration_at = None
        while last_iteration_at is None and time.perf_counter() - t_lock < 120:
            p = call(f"{server.base}/api/jobs/{first['id']}")[1].get("progress") or {}
            if p.get("iterations") and p["iteration"] == p["iterations"]:
                last_iteration_at = time.perf_counter() - t_lock
            time.sleep(0.2)
        time.sleep(hold)
        first_state_during = server.jobs()[first["id"]]["state"]
        db.execute("ROLLBACK")
        db.close()
        t_release = time.perf_counter()
        first_final = server.wait(first["id"])
        recorded_after = time.perf_counter() - t_release
        second_final = server.wait(second["id"])
        return {"held_seconds_after_last_iteration": hold,
                "during_lock": {k: {"status": v[0], "json": v[2].startswith("application/json"),
                                    "detail": v[1].get("detail")} for k, v in during.items()},
                "running_job_last_iteration_seconds_into_lock": None if last_iteration_at is None
                else round(last_iteration_at, 1),
                "running_job_state_at_end_of_lock": first_state_during,
                "running_job_final": first_final,
                "recorded_seconds_after_release": round(recorded_after, 2),
                "next_job_final": second_final,
                "worker_retry_warnings_in_log": server.log.read_text().count("cannot record")}
    finally:
        server.stop()


def full_disk(root: Path) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return {"skipped": "needs root to mount a small tmpfs"}
    mount = root / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)]).returncode:
        return {"skipped": "mount -t tmpfs failed"}
    server = None
    try:
        server = Server(mount / "data", log_dir=root)  # its log off the small disk
        warm = server.submit({"size": "32", "iterations": "1"}, images())[1]
        server.wait(warm["id"])  # the network is loaded
        job = server.submit({"size": "32", "iterations": "8"}, images())[1]
        waiting = server.submit({"size": "32", "iterations": "2"}, images())[1]
        server.wait(job["id"], ("running",))
        filler = mount / "filler"
        with open(filler, "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        t_full = time.perf_counter()
        submit = server.submit({"size": "32", "iterations": "2"}, images())
        while time.perf_counter() - t_full < 120:  # until the job's last iteration is done
            p = call(f"{server.base}/api/jobs/{job['id']}")[1]
            if p.get("state") in FINAL or (p.get("progress") or {}).get("iteration") == 8:
                break
            time.sleep(0.2)
        time.sleep(10)  # the disk stays full while the job's result is written and recorded
        job_state_while_full = call(f"{server.base}/api/jobs/{job['id']}")[1].get("state")
        waiting_during = call(f"{server.base}/api/jobs/{waiting['id']}")[1].get("state")
        folders_while_full = len(list((server.data_dir / "jobs").iterdir()))
        full_for = time.perf_counter() - t_full
        retries_while_full = server.log.read_text().count("cannot record")
        filler.unlink()  # space is back
        t_free = time.perf_counter()
        job_final = server.wait(job["id"])
        job_view = call(f"{server.base}/api/jobs/{job['id']}")[1]
        waiting_final = server.wait(waiting["id"])
        after = server.submit({"size": "32", "iterations": "2"}, images())
        after_final = server.wait(after[1]["id"]) if after[0] == 201 else None
        return {"disk_mib": 24, "full_for_seconds": round(full_for, 1),
                "submit_while_full": {"status": submit[0], "json": submit[2].startswith("application/json"),
                                      "detail": submit[1].get("detail")},
                "job_folders_while_full": folders_while_full,
                "running_job": {"state_10_s_after_its_last_iteration": job_state_while_full,
                                "final_after_space_back": job_final, "error": job_view.get("error")},
                "queued_job_while_full": waiting_during,
                "queued_job_after_space_back": waiting_final,
                "resumed_seconds_after_space_back": round(time.perf_counter() - t_free, 1),
                "new_job_after_space_back": {"status": after[0], "final": after_final},
                "worker_retry_warnings_while_full": retries_while_full}
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", str(mount)])


SCENARIOS = {"attacks": attacks, "decode": decode_pressure, "sqlite_lock": sqlite_lock,
             "full_disk": full_disk}


def run_faults(json_path: str, only: list[str] | None = None) -> int:
    """Runs the scenarios (``only``: some of them; their results are merged into an
    existing report at ``json_path``)."""
    unknown = set(only or ()) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    root = Path(tempfile.mkdtemp(prefix="nstyle-faults-"))
    out = Path(json_path)
    report = json.loads(out.read_text()) if only and out.exists() else {}
    for name, scenario in SCENARIOS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        report[name] = scenario(root)
        report[name]["scenario_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"== {name}")
        print(json.dumps(report[name], indent=2))
    report["ok"] = _ok(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("OK" if report["ok"] else "NOT OK")
    print(f"wrote {out}")
    return 0 if report["ok"] else 1


def _ok(report: dict[str, Any]) -> bool:
    """Every attack refused in JSON with nothing stored; the worker outlived the lock and
    the full disk, and the queue drained afterwards."""
    checks = []
    if "attacks" in report:
        a = report["attacks"]
        checks.append(all(400 <= c["status"] < 500 and c["json"] for c in a["cases"].values())
                      and a["jobs_listed"] == 0)
    if "sqlite_lock" in report:
        lock = report["sqlite_lock"]
        checks.append(lock["running_job_final"] == lock["next_job_final"] == "succeeded")
    if "full_disk" in report and "skipped" not in report["full_disk"]:
        disk = report["full_disk"]
        checks.append(disk["submit_while_full"]["status"] == 507
                      and disk["queued_job_after_space_back"] == "succeeded")
    return all(checks)

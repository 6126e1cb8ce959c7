"""Load check of the HTTP service: N job submissions at the same instant, then the outcome;
and, with --faults, what an attacker or a broken machine can do to it.

    python bench/load_service.py                       # starts its own server, 50 jobs
    python bench/load_service.py --url http://127.0.0.1:8000 --jobs 50
    python bench/load_service.py --faults              # attacks, decode pressure, a locked
                                                       # database, a full disk (needs root)

Every submission must be either accepted (201) or cleanly refused (a 4xx with a message,
e.g. 429 when the queue is full); none may be lost: every accepted job must appear in the
job list and reach a final state. With its own server, the script also restarts it after
the queue has drained and checks that every accepted job is still listed.

Only 127.0.0.1 is accepted as a target. Everything is bounded by --timeout. Prints a table
and writes JSON (default bench/results/load_service.json). Standard library only, so it
can run against a server from another environment.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

FINAL = ("succeeded", "failed", "cancelled", "interrupted")


def tiny_png(which: str, size: int = 64) -> bytes:
    from PIL import Image
    from skimage import data

    img = Image.fromarray(getattr(data, which)()).convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  f"{value}\r\n".encode())
    for name, filename, data in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: image/png\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def request(url: str, token: str | None, method: str = "GET", body: bytes | None = None,
            content_type: str | None = None, timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, data_dir: str, max_queue: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "nstyle", "serve", "--port", str(port), "--data",
                             data_dir, "--max-queue", str(max_queue), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_ready(proc, port, log_path)
    return proc


def wait_ready(proc: subprocess.Popen, port: int, log_path: Path) -> None:
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited; see {log_path}")
        try:
            urllib.request.urlopen(url + "/api/info", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start within 60 s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def list_jobs(base: str, token: str | None) -> dict[str, dict]:
    status, body = request(base + "/api/jobs?limit=500", token)
    if status != 200:
        raise RuntimeError(f"GET /api/jobs answered {status}: {body}")
    return {j["id"]: j for j in body["jobs"]}


def submit_all(base: str, token: str | None, n: int, size: int, iterations: int) -> list[dict]:
    content, style = tiny_png("chelsea"), tiny_png("hubble_deep_field")
    body, ctype = multipart({"size": str(size), "iterations": str(iterations)},
                            [("content", "cat.png", content), ("style", "hubble.png", style)])
    barrier = threading.Barrier(n)
    results: list[dict] = [{} for _ in range(n)]

    def one(i: int) -> None:
        barrier.wait()  # all requests leave together
        t0 = time.perf_counter()
        try:
            status, answer = request(base + "/api/jobs", token, "POST", body, ctype)
        except OSError as exc:  # no HTTP answer at all: neither accepted nor refused
            status, answer = None, {"detail": f"{type(exc).__name__}: {exc}"}
        results[i] = {"status": status, "id": answer.get("id"), "detail": answer.get("detail"),
                      "seconds": time.perf_counter() - t0}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="an already running server (127.0.0.1 only); default: start one")
    p.add_argument("--token", default=os.environ.get("NSTYLE_TOKEN"))
    p.add_argument("--jobs", type=int, default=50, help="concurrent submissions (default 50)")
    p.add_argument("--max-queue", type=int, default=20, help="queue limit of the server this "
                   "script starts (default 20, the server's default)")
    p.add_argument("--size", type=int, default=32, help="job size in px (default 32: quick)")
    p.add_argument("--iterations", type=int, default=2, help="job iterations (default 2)")
    p.add_argument("--timeout", type=float, default=600, help="seconds for the whole check (default 600)")
    p.add_argument("--json", default=None, help="where to write the report (default: "
                   "bench/results/load_service.json, or load_service_faults.json with --faults)")
    p.add_argument("--faults", nargs="*", metavar="SCENARIO", help="run the fault scenarios "
                   "instead, each against a server of its own: attacks, decode, sqlite_lock, "
                   "full_disk (default: all)")
    args = p.parse_args(argv)
    results_dir = Path(__file__).parent / "results"
    if args.faults is not None:
        from load_service_faults import run_faults

        return run_faults(args.json or str(results_dir / "load_service_faults.json"), args.faults)
    args.json = args.json or str(results_dir / "load_service.json")
    t_start = time.monotonic()
    deadline = t_start + args.timeout

    proc, data_dir, port = None, None, None
    if args.url:
        host = urllib.parse.urlsplit(args.url).hostname
        if host not in ("127.0.0.1", "localhost"):
            p.error("--url must point to 127.0.0.1 (this script only loads a local server)")
        base = args.url.rstrip("/")
    else:
        data_dir = tempfile.mkdtemp(prefix="nstyle-load-")
        port = free_port()
        log_path = Path(data_dir) / "server.log"
        proc = start_server(port, data_dir, args.max_queue, log_path)
        base = f"http://127.0.0.1:{port}"
    try:
        before = set(list_jobs(base, args.token))
        t_submit = time.perf_counter()
        results = submit_all(base, args.token, args.jobs, args.size, args.iterations)
        submit_seconds = time.perf_counter() - t_submit
        accepted = [r["id"] for r in results if r["status"] == 201]
        refused = [r for r in results if r["status"] is not None and 400 <= r["status"] < 500]
        errors = [r for r in results if r["status"] is None or r["status"] >= 500
                  or (r["status"] != 201 and r["status"] < 400)]

        # every accepted job must be listed and reach a final state
        states: dict[str, str] = {}
        t_drain = time.perf_counter()
        while True:
            listed = list_jobs(base, args.token)
            states = {i: listed[i]["state"] if i in listed else "MISSING" for i in accepted}
            if all(s in FINAL or s == "MISSING" for s in states.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        drain_seconds = time.perf_counter() - t_drain
        new_jobs = set(listed) - before
        restart = None
        if proc is not None:  # the records must survive a restart as well
            stop_server(proc)
            proc = start_server(port, data_dir, args.max_queue, Path(data_dir) / "server.log")
            after = list_jobs(base, args.token)
            restart = {"listed_after_restart": sum(i in after for i in accepted),
                       "same_states": sum(after.get(i, {}).get("state") == states[i] for i in accepted)}
    finally:
        if proc is not None:
            stop_server(proc)

    lost = [i for i, s in states.items() if s == "MISSING"]
    unfinished = [i for i, s in states.items() if s not in FINAL and s != "MISSING"]
    lat = sorted(r["seconds"] for r in results if r["status"] is not None)
    report = {
        "jobs": args.jobs, "max_queue": args.max_queue if not args.url else None,
        "job": {"size": args.size, "iterations": args.iterations},
        "accepted": len(accepted), "refused": len(refused), "errors": len(errors), "lost": len(lost),
        "unfinished_at_deadline": len(unfinished),
        "unexpected_new_jobs": len(new_jobs - set(accepted)),
        "final_states": dict(collections.Counter(states.values())),
        "refusals": dict(collections.Counter(f"{r['status']} {r['detail']}" for r in refused)),
        "errors_detail": [f"{r['status']} {r['detail']}" for r in errors][:5],
        "submit_seconds": round(submit_seconds, 3),
        "submit_latency_s": {"p50": round(statistics.median(lat), 3) if lat else None,
                             "p95": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
                             "max": round(lat[-1], 3) if lat else None},
        "drain_seconds": round(drain_seconds, 1),
        "restart": restart,
        "ok": not lost and not errors and not unfinished and len(accepted) + len(refused) == args.jobs,
    }
    rows = [("submissions", args.jobs), ("accepted (201)", len(accepted)),
            ("refused cleanly (4xx)", len(refused)), ("errors (5xx / no answer)", len(errors)),
            ("lost (accepted, not listed)", len(lost)), ("unfinished at deadline", len(unfinished)),
            ("final states", ", ".join(f"{k} {v}" for k, v in report["final_states"].items()) or "-"),
            ("submit wall time", f"{submit_seconds:.2f} s"),
            ("submit latency p50 / p95 / max",
             " / ".join(f"{v:.2f} s" for v in report["submit_latency_s"].values() if v is not None)),
            ("queue drained in", f"{drain_seconds:.1f} s")]
    if restart:
        rows.append(("listed after a restart", f"{restart['listed_after_restart']} of {len(accepted)}"))
    for message, count in report["refusals"].items():
        rows.append((f"refusal x{count}", message[:90]))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("OK" if report["ok"] else "NOT OK")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

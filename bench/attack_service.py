"""Attack bench of the HTTP service: every request of the hardening issues, sent to a real
``nstyle serve`` on 127.0.0.1, each with its answer, its time, the server's memory and the
latency of a concurrent GET while it ran.

    python bench/attack_service.py                      # every attack, this checkout's server
    python bench/attack_service.py --only jpeg gif      # attacks whose name has these words
    python bench/attack_service.py --source /tmp/old    # the server from another source tree
                                                        # (to measure the code before a fix)

Per attack: what was expected and what came back (status, and the start of the message),
the seconds the attack took, the server's RSS before it, at its peak (VmHWM, reset before
each attack through /proc/PID/clear_refs) and after, and the slowest of the GET /api/info
calls a second client sent every 50 ms meanwhile, and for 2 s after (until the job ended,
up to 60 s, when the attack got one accepted: its run is part of its cost). A row passes when its status is the expected one, and the attack
cost under 2 s, under 300 MiB more than before, and no GET waited 0.5 s or more. Jobs
an attack got accepted are deleted before the next attack.

Bounded: only 127.0.0.1, one server per run (and a second start for the token check),
each request under 120 s; the payloads are sized to take seconds on the code before
the fixes, not hours (their cost grows linearly with the counts printed in their names).
Prints a table, writes JSON (default bench/results/attack_service.json). Needs Pillow,
NumPy and PyAV (the MP4), like the service's video extra.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

sys.path.insert(0, str(Path(__file__).parent))
from load_service import free_port, stop_server, tiny_png, wait_ready  # noqa: E402

MIB = 1024 * 1024
#: what a row may cost to pass
MAX_SECONDS, MAX_RSS_MIB, MAX_GET_SECONDS = 2.0, 300, 0.5
#: longest wait for a job an attack got accepted to end (then it is deleted)
JOB_WAIT = 60.0
FAST = {"size": "32", "iterations": "3"}


# --------------------------------------------------------------------------- the server


class Server:
    """``nstyle serve`` on a free port of 127.0.0.1, from this checkout or ``source``."""

    def __init__(self, root: Path, *flags: str, source: Optional[str] = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = root / f"data-{self.port}"
        self.log = root / f"server-{self.port}.log"
        env = dict(os.environ)
        if source:
            env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nstyle", "serve", "--port", str(self.port), "--data",
             str(self.data_dir), "--log-level", "warning", *flags],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=root)
        wait_ready(self.proc, self.port, self.log)

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return -1

    def reset_peak(self) -> None:
        try:  # "5" resets the peak RSS (VmHWM) of a process we own
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def stop(self) -> None:
        stop_server(self.proc)


def send(port: int, method: str, path: str, body: Any = b"", headers: Optional[dict] = None,
         timeout: float = 120.0) -> tuple[int, dict, dict]:
    """(status, JSON body or {'raw': ...}, headers) of one request; ``body`` may be bytes or
    an iterable of bytes (sent as they come: with a Content-Length, not chunked)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = dict(headers or {})
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        if isinstance(body, (bytes, bytearray)):
            headers.setdefault("Content-Length", str(len(body)))
            parts: Iterable[bytes] = [body] if body else []
        else:
            parts = body
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        for part in parts:
            conn.send(part)
        r = conn.getresponse()
        raw = r.read()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {"raw": raw[:80].decode("latin-1")}
        return r.status, data if isinstance(data, dict) else {"raw": data}, dict(r.getheaders())
    finally:
        conn.close()


def form(fields: dict[str, str], files: list[tuple[str, str, bytes]], boundary: Optional[str] = None
         ) -> tuple[list[bytes], dict[str, str]]:
    """A multipart body as a list of parts (a file repeated is the same bytes object, not a
    copy) and its headers."""
    b = boundary or uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        parts += [f'--{b}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode(), data, b"\r\n"]
    parts.append(f"--{b}--\r\n".encode())
    return parts, {"Content-Type": f"multipart/form-data; boundary={b}",
                   "Content-Length": str(sum(map(len, parts)))}


def post_form(srv: Server, path: str, fields: dict[str, str], files: list[tuple[str, str, bytes]],
              headers: Optional[dict] = None, timeout: float = 120.0) -> tuple[int, dict, dict]:
    parts, h = form(fields, files)
    return send(srv.port, "POST", path, parts, {**h, **(headers or {})}, timeout)


# --------------------------------------------------------------------------- payloads


def encode(img, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def jpeg_many_scans(extra: int, side: int = 5000) -> bytes:
    """A progressive JPEG of side x side whose last scan (all end-of-band runs: a few bytes)
    is repeated ``extra`` times; libjpeg decodes each one, a pass over every block."""
    from PIL import Image

    data = encode(Image.new("RGB", (side, side), (120, 130, 140)), "JPEG", progressive=True)
    eoi = data.rindex(b"\xff\xd9")
    last = data[[m.start() for m in re.finditer(rb"\xff\xda", data)][-1]:eoi]
    return data[:eoi] + last * extra + data[eoi:]


def jpeg_segment_flood(n: int) -> bytes:
    """A small JPEG with ``n`` 5-byte comment segments before its frame."""
    from PIL import Image

    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x03x" * n + data[2:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))


def png_chunk_flood(n: int) -> bytes:
    data = tiny_png("chelsea")
    return data[:33] + png_chunk(b"zzAz", b"") * n + data[33:]


def gif_extension_flood(n: int) -> bytes:
    from PIL import Image

    data = encode(Image.new("P", (64, 64)), "GIF")
    head = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    return data[:head] + b"\x21\xfe\x00" * n + data[head:]


def gif_many_frames(frames: int, width: int = 1920, height: int = 1088) -> bytes:
    """An animated GIF: a first frame of the whole canvas, then ``frames - 1`` frames of
    one pixel each (a few dozen bytes apiece)."""
    from PIL import Image

    first = encode(Image.new("P", (width, height), 0), "GIF")
    head = 13 + (3 << ((first[10] & 7) + 1) if first[10] & 0x80 else 0)
    gce = b"\x21\xf9\x04\x04\x04\x00\x00\x00"  # 40 ms, keep the frame below
    one_pixel = b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00"
    body = first[head:-1]  # the first frame's blocks, without the trailer
    return (first[:head] + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00" + body
            + (gce + one_pixel) * (frames - 1) + b";")


def gif_tiny_sub_blocks(n: int) -> bytes:
    """A GIF whose one frame's data is ``n`` sub-blocks of one byte (encoders write 255)."""
    from PIL import Image

    data = encode(Image.new("P", (64, 64)), "GIF")
    head = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, 64, 64) + b"\x00\x02" + b"\x01\x00" * n + b"\x00"
    return data[:head] + frame + b";"


def mp4_many_frames(frames: int, side: int = 16) -> bytes:
    import av
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=1000)
            stream.width = stream.height = side
            stream.pix_fmt = "yuv420p"
            still = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
            for i in range(frames):
                still.pts = i
                for p in stream.encode(still):
                    out.mux(p)
            for p in stream.encode():
                out.mux(p)
        return path.read_bytes()


def noise_png(side: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG", compress_level=0)


# --------------------------------------------------------------------------- the attacks


def images() -> list[tuple[str, str, bytes]]:
    return [("content", "cat.png", tiny_png("chelsea")), ("style", "hubble.png", tiny_png("hubble_deep_field"))]


def style_only() -> list[tuple[str, str, bytes]]:
    return images()[1:]


def job(srv: Server, fields: dict[str, str], files=None, **kw: Any) -> tuple[int, dict, dict]:
    return post_form(srv, "/api/jobs", fields, images() if files is None else files, **kw)


def both(first: Callable[[], tuple], second: Callable[[], tuple]) -> tuple[int, dict, dict]:
    """Two requests at once; the answer of the first, and the second's status in its detail."""
    out: list[Any] = [None, None]
    threads = [threading.Thread(target=lambda i=i, f=f: out.__setitem__(i, f()))
               for i, f in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status, body, headers = out[0]
    return status, {"detail": f"[and {out[1][0]}] " + str(body.get("detail", body))}, headers


def slow_body(srv: Server, seconds: float = 3.0) -> tuple[int, dict, dict]:
    """A body sent a few bytes at a time over ``seconds``."""
    parts, headers = form(FAST, images())
    whole = b"".join(parts)
    steps = 30

    def trickle():
        n = len(whole) // steps + 1
        for i in range(0, len(whole), n):
            time.sleep(seconds / steps)
            yield whole[i:i + n]
    return send(srv.port, "POST", "/api/jobs", trickle(), headers)


def token_refused(root: Path, source: Optional[str]) -> tuple[int, dict, dict]:
    """``nstyle serve --token ''``: the exit status (as 'status') and its message."""
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    try:
        p = subprocess.run([sys.executable, "-m", "nstyle", "serve", "--token", "", "--port",
                            str(free_port()), "--data", str(root / "token")], env=env, cwd=root,
                           capture_output=True, text=True, timeout=20)
        return p.returncode, {"detail": (p.stderr.strip().splitlines() or [""])[-1]}, {}
    except subprocess.TimeoutExpired:
        return 0, {"detail": "started and served (killed after 20 s)"}, {}


def served_as_html(srv: Server) -> tuple[int, dict, dict]:
    """201 when the upload comes back as image/png with nosniff; else -1."""
    status, body, _ = job(srv, FAST, [("content", "evil.html", tiny_png("chelsea")), *style_only()])
    if status != 201:
        return status, body, {}
    _, _, headers = send(srv.port, "GET", body["inputs"]["content"]["original"])
    headers = {k.lower(): v for k, v in headers.items()}
    kind, sniff = headers.get("content-type"), headers.get("x-content-type-options")
    safe = kind == "image/png" and sniff == "nosniff"
    return status if safe else -1, {"detail": f"served as {kind}, nosniff: {sniff or 'no'}"}, headers


@dataclass
class Attack:
    name: str
    expected: tuple[Any, ...]  # statuses; "exit!=0" for a server that must not start
    send: Callable[[Server, Path, Any], tuple]  # (server, scratch folder, payload) -> answer
    payload: Callable[[], Any] = lambda: None  # made before the clock starts
    timed: bool = True  # False: its time is the client's own (a slow upload)


def with_content(name: str, data: Callable[[], bytes], expected: tuple, label: str) -> Attack:
    """An image as the content of an ordinary job."""
    return Attack(label, expected, lambda srv, root, d: job(srv, FAST, [("content", name, d), *style_only()]),
                  data)


def as_clip(name: str, data: Callable[[], bytes], label: str) -> Attack:
    return Attack(label, (413,), lambda srv, root, d: post_form(
        srv, "/api/videos", FAST, [("clip", name, d), *style_only()]), data)


def options(label: str, fields: dict[str, str], expected: tuple = (400,)) -> Attack:
    return Attack(label, expected, lambda srv, root, _: job(srv, fields))


def fifteen_big() -> list[tuple[str, str, bytes]]:
    """15 files of 20 MB (each the server's per-image limit), one bytes object repeated."""
    big = noise_png(2580)
    return [("content", "c.png", big)] + [("style", f"s{i}.png", big) for i in range(14)]


def thirteen_big() -> list[tuple[str, str, bytes]]:
    """13 files of 20 MB that make a valid form (content, 5 styles, their 5 masks, a keep
    mask, a starting image): each is read and probed before the pixel budget refuses them."""
    big = noise_png(2580)
    return ([("content", "c.png", big)] + [("style", f"s{i}.png", big) for i in range(5)]
            + [("style_mask", f"m{i}.png", big) for i in range(5)]
            + [("keep_mask", "k.png", big), ("init_image", "i.png", big)])


ATTACKS: list[Attack] = [
    # issue 23, item 1: history_size had no upper bound
    options("history_size=200000000 (size 32, 3 iterations)", {**FAST, "history_size": "200000000"}),
    # item 5: values accepted that then failed the job, a bomb's status, the token, the type
    options("history_size=10**30", {**FAST, "history_size": str(10**30)}),
    options("lr=1e308", {**FAST, "lr": "1e308"}),
    options("init=noise seed=10**30", {**FAST, "init": "noise", "seed": str(10**30)}),
    with_content("bomb.png", lambda: png_header_only(30000, 30000), (413,), "PNG header of 30000x30000"),
    Attack("upload named evil.html, served back", (201,), lambda srv, root, _: served_as_html(srv)),
    Attack("--token ''", ("exit!=0",), lambda srv, root, _: token_refused(root, ARGS.source),
           timed=False),  # its time is a Python start-up
    # item 2: decoding that took minutes
    with_content("scans.jpg", lambda: jpeg_many_scans(300), (400,), "progressive JPEG 5000x5000 + 300 scans"),
    as_clip("c.gif", lambda: gif_many_frames(3000), "GIF clip of 3,000 one-pixel frames, 1920x1088"),
    as_clip("c.mp4", lambda: mp4_many_frames(5000), "MP4 clip of 5,000 frames"),
    Attack("GIF clip of one frame in 20,000,000 one-byte sub-blocks", (400,), lambda srv, root, d: post_form(
        srv, "/api/videos", FAST, [("clip", "c.gif", d), *style_only()]), lambda: gif_tiny_sub_blocks(20_000_000)),
    with_content("c.jpg", lambda: jpeg_segment_flood(3_000_000), (400,), "JPEG of 3,000,000 comment segments"),
    with_content("c.png", lambda: png_chunk_flood(1_000_000), (400,), "PNG of 1,000,000 empty chunks"),
    with_content("c.gif", lambda: gif_extension_flood(5_000_000), (400,), "GIF of 5,000,000 empty extensions"),
    # item 3: the browser as an attacker
    Attack("POST /api/jobs from Origin http://evil.example", (403,),
           lambda srv, root, _: job(srv, FAST, headers={"Origin": "http://evil.example"})),
    Attack("GET /api/jobs as Host rebind.evil.example", (403,), lambda srv, root, _: send(
        srv.port, "GET", "/api/jobs", headers={"Host": f"rebind.evil.example:{srv.port}"})),
    # item 4: upload bytes held in memory
    Attack("one body of 15 x 20 MB images", (413,), lambda srv, root, files: job(srv, FAST, files),
           fifteen_big),
    Attack("two bodies of 15 x 20 MB images at once", (413,), lambda srv, root, files: both(
        lambda: job(srv, FAST, files), lambda: job(srv, FAST, files)), fifteen_big),
    Attack("13 x 20 MB images in a valid form, all probed", (413,),
           lambda srv, root, files: job(srv, FAST, files), thirteen_big),
    Attack("two such forms at once", (413,), lambda srv, root, files: both(
        lambda: job(srv, FAST, files), lambda: job(srv, FAST, files)), thirteen_big),
    # the matrix that passed before: file-naming fields, traversal, limits, multipart, slow
    *[options(f"{name}={value} as text", {**FAST, name: value})
      for name in ("content", "style_mask", "keep_mask", "init_image", "fine_style", "coarse_style")
      for value in ("/etc/passwd", "../../../etc/hostname", "file:///dev/zero")],
    options("init=/etc/hostname", {**FAST, "init": "/etc/hostname"}),
    options("save_dir=/tmp", {**FAST, "save_dir": "/tmp"}),
    options("progression=/tmp/x.gif", {**FAST, "progression": "/tmp/x.gif"}),
    Attack("GET /api/jobs/..%2f..%2fetc%2fpasswd", (404,),
           lambda srv, root, _: send(srv.port, "GET", "/api/jobs/..%2f..%2fetc%2fpasswd")),
    Attack("GET /api/jobs/ID/inputs/..%2f..%2fjobs.sqlite3", (404,), lambda srv, root, _: send(
        srv.port, "GET", "/api/jobs/0123456789abcdef/inputs/..%2f..%2fjobs.sqlite3")),
    Attack("GET /static/..%2f..%2fjobs.py", (404,),
           lambda srv, root, _: send(srv.port, "GET", "/static/..%2f..%2fjobs.py")),
    options("iterations=10**30", {"iterations": str(10**30)}),
    options("scales=64,8192", {"scales": "64,8192"}),
    options("tile_size=0 memory_limit=100000", {"tile_size": "0", "memory_limit": "100000"}),
    options("content_layers of 900 kB", {"content_layers": "relu4_2," * 112_500}),
    options("5,000 form fields", {f"f{i}": "1" for i in range(5000)}),
    Attack("40 file parts", (400,), lambda srv, root, _: job(srv, FAST, images() * 20)),
    Attack("body cut before its closing boundary", (400,), lambda srv, root, _: cut_body(srv)),
    Attack("Content-Length of 10 GB", (413,), lambda srv, root, _: send(
        srv.port, "POST", "/api/jobs", b"", {"Content-Type": "multipart/form-data; boundary=x",
                                             "Content-Length": str(10 * 1024**3)})),
    Attack("a body sent over 3 s", (201,), lambda srv, root, _: slow_body(srv), timed=False),
    with_content("bomb.png", lambda: png_header_only(20000, 20000), (413,), "PNG that decodes to 20000x20000"),
]


def cut_body(srv: Server) -> tuple[int, dict, dict]:
    parts, headers = form({"size": "32"}, images())
    whole = b"".join(parts[:-1])  # without the closing boundary
    return send(srv.port, "POST", "/api/jobs", whole, {**headers, "Content-Length": str(len(whole))})


# --------------------------------------------------------------------------- measuring


class Watch:
    """While it runs: GET /api/info every 50 ms from another client (the slowest answer
    kept), and the server's RSS."""

    def __init__(self, srv: Server) -> None:
        self.srv, self.stop, self.slowest, self.gets, self.errors = srv, threading.Event(), 0.0, 0, 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                status, _, _ = send(self.srv.port, "GET", "/api/info", timeout=60)
                self.errors += status != 200
            except OSError:
                self.errors += 1
            self.slowest = max(self.slowest, time.perf_counter() - t0)
            self.gets += 1
            self.stop.wait(0.05)

    def __enter__(self) -> "Watch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(120)


def run_attack(srv: Server, root: Path, attack: Attack) -> dict[str, Any]:
    payload = attack.payload()
    time.sleep(0.3)
    rss_before = srv.status_kib("VmRSS") / 1024
    srv.reset_peak()
    with Watch(srv) as watch:
        t0 = time.perf_counter()
        try:
            status, body, _ = attack.send(srv, root, payload)
            detail = str(body.get("detail", body.get("raw", "")))
        except (OSError, http.client.HTTPException) as exc:
            status, detail = 0, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t0
        time.sleep(2.0)
        # a job it got accepted is part of its cost: watched until it ends (or JOB_WAIT s)
        deadline = time.monotonic() + JOB_WAIT
        while time.monotonic() < deadline and any(
                j["state"] in ("queued", "running") for j in list_jobs(srv)):
            time.sleep(0.2)
    del payload
    for j in list_jobs(srv):  # what became of the job it got in
        detail += f" -> job {j['state']}" + (f": {j['error']}" if j.get("error") else "")
    row = {"attack": attack.name, "expected": "/".join(map(str, attack.expected)), "status": status,
           "detail": detail[:240], "seconds": round(seconds, 2),
           "rss_before_mib": round(rss_before), "rss_peak_mib": round(srv.status_kib("VmHWM") / 1024),
           "rss_after_mib": round(srv.status_kib("VmRSS") / 1024),
           "get_max_s": round(watch.slowest, 3), "gets": watch.gets, "get_errors": watch.errors}
    status_ok = status in attack.expected or (attack.expected == ("exit!=0",) and status not in (0, None))
    row["pass"] = bool(status_ok and (seconds < MAX_SECONDS or not attack.timed)
                       and watch.slowest < MAX_GET_SECONDS and watch.errors == 0
                       and row["rss_peak_mib"] - row["rss_before_mib"] < MAX_RSS_MIB)
    for job_id in list_job_ids(srv):  # what it got in is not the next attack's cost
        send(srv.port, "DELETE", f"/api/jobs/{job_id}")
    return row


def list_jobs(srv: Server) -> list[dict[str, Any]]:
    status, body, _ = send(srv.port, "GET", "/api/jobs?limit=500")
    return body.get("jobs", []) if status == 200 else []


def list_job_ids(srv: Server) -> list[str]:
    return [j["id"] for j in list_jobs(srv)]


def shorten(detail: str, keep: int = 60) -> str:
    """The message's start, and what became of an accepted job."""
    head, arrow, job = detail.partition(" -> job ")
    return head[:keep] + ("…" if len(head) > keep else "") + (f" → job {job[:50]}" if arrow else "")


def table(rows: list[dict[str, Any]]) -> str:
    head = ("attack", "expected", "observed", "s", "RSS MiB before/peak/after", "GET max s", "ok")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        observed = f"{r['status']} {shorten(r['detail'])}".replace("|", "/")
        lines.append(f"| {r['attack']} | {r['expected']} | {observed} | {r['seconds']:.2f} | "
                     f"{r['rss_before_mib']}/{r['rss_peak_mib']}/{r['rss_after_mib']} | "
                     f"{r['get_max_s']:.3f} | {'yes' if r['pass'] else 'NO'} |")
    return "\n".join(lines)


ARGS: argparse.Namespace


def main(argv: Optional[list[str]] = None) -> int:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="only the attacks whose name contains one of these")
    p.add_argument("--source", help="run the server from this source tree (PYTHONPATH), e.g. an "
                   "export of an older commit, to measure it the same way")
    p.add_argument("--json", default=str(Path(__file__).parent / "results" / "attack_service.json"))
    ARGS = p.parse_args(argv)
    chosen = [a for a in ATTACKS if not ARGS.only or any(w.lower() in a.name.lower() for w in ARGS.only)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nstyle-attack-") as tmp:
        root = Path(tmp)
        srv = Server(root, source=ARGS.source)
        try:
            # warm: the network is loaded once (a job's first run), so that it is not measured
            status, body, _ = job(srv, {"size": "32", "iterations": "1"})
            deadline = time.monotonic() + 120
            while status == 201 and time.monotonic() < deadline and send(
                    srv.port, "GET", f"/api/jobs/{body['id']}")[1].get("state") in ("queued", "running"):
                time.sleep(0.2)
            for job_id in list_job_ids(srv):
                send(srv.port, "DELETE", f"/api/jobs/{job_id}")
            for attack in chosen:
                if srv.proc.poll() is not None:
                    rows.append({"attack": attack.name, "expected": "/".join(map(str, attack.expected)), "status": 0,
                                 "detail": "the server had exited", "seconds": 0, "rss_before_mib": 0,
                                 "rss_peak_mib": 0, "rss_after_mib": 0, "get_max_s": 0, "gets": 0,
                                 "get_errors": 0, "pass": False})
                    continue
                rows.append(run_attack(srv, root, attack))
                r = rows[-1]
                print(f"{'ok  ' if r['pass'] else 'FAIL'} {attack.name}: {r['status']} in {r['seconds']:.2f} s, "
                      f"RSS {r['rss_before_mib']}->{r['rss_peak_mib']} MiB, GET max {r['get_max_s']:.3f} s",
                      file=sys.stderr, flush=True)
        finally:
            srv.stop()
    print(table(rows))
    Path(ARGS.json).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.json).write_text(json.dumps({"source": ARGS.source or "this checkout", "rows": rows},
                                          indent=2) + "\n")
    failed = [r["attack"] for r in rows if not r["pass"]]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} attacks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

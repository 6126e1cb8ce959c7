"""``nstyle serve`` (the server's flags, then the app under uvicorn) and ``nstyle gui`` (the
same on a free loopback port, with the page opened in the default browser)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
import webbrowser
from pathlib import Path
from typing import Sequence

from nstyle.errors import BadOption
from nstyle.service.settings import MB, ServiceSettings

DEFAULTS = ServiceSettings()


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
                 ) -> argparse.ArgumentParser:
    p = parser_class(prog="nstyle serve", description="Serve the web page and the HTTP API "
                     "(a job queue) in one process. Open http://HOST:PORT/ in a browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                   "127.0.0.1, this machine only; use 0.0.0.0 to expose it, with --token)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--data", default=str(DEFAULTS.data_dir), help="folder for the job records "
                   f"and images (default: ./{DEFAULTS.data_dir}); jobs survive restarts")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on "
                   "every API call (default: $NSTYLE_TOKEN if set, else no token)")
    p.add_argument("--public-host", action="append", default=[], metavar="NAME",
                   help="a name clients reach the server under (a proxy's, or this machine's "
                   "address on the network); repeatable. Without a token, requests addressed "
                   "to other names than 127.0.0.1, localhost, the --host address and these, "
                   "and requests from other sites' pages, are refused (403)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers, help="jobs run at the same "
                   f"time (default: {DEFAULTS.workers}, one at a time on the device)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULTS.max_upload_bytes / MB,
                   help=f"largest image upload in MB (default: {DEFAULTS.max_upload_bytes // MB})")
    p.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels,
                   help=f"largest input image in pixels (default: {DEFAULTS.max_pixels:,})")
    p.add_argument("--max-styles", type=int, default=DEFAULTS.max_styles,
                   help=f"most style images per job (default: {DEFAULTS.max_styles})")
    p.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                   help=f"most jobs waiting; more are refused with 429 (default: {DEFAULTS.max_queue})")
    p.add_argument("--max-size", type=int, default=DEFAULTS.max_size,
                   help="largest output size (longest side, also of every scale and of the style "
                   f"images) a job may ask for (default: {DEFAULTS.max_size})")
    p.add_argument("--max-iterations", type=int, default=DEFAULTS.max_iterations,
                   help="most iterations of one job, over all its scales and the scale mixing "
                   f"(default: {DEFAULTS.max_iterations})")
    p.add_argument("--max-megapixel-iterations", type=float,
                   default=DEFAULTS.max_megapixel_iterations,
                   help="most work of one job: output megapixels x iterations, summed over its "
                   f"scales (default: {DEFAULTS.max_megapixel_iterations:g}; a 2048 px run "
                   "with the default iterations is about 290)")
    p.add_argument("--max-request-pixels", type=int, default=DEFAULTS.max_request_pixels,
                   help="most pixels of all the images of one request together, read from "
                   f"their headers before decoding (default: {DEFAULTS.max_request_pixels:,})")
    p.add_argument("--max-field-chars", type=int, default=DEFAULTS.max_field_chars,
                   help=f"longest option value (default: {DEFAULTS.max_field_chars} characters)")
    p.add_argument("--max-video-mb", type=float, default=DEFAULTS.max_video_upload_bytes / MB,
                   help="largest clip upload of a video job in MB (default: "
                   f"{DEFAULTS.max_video_upload_bytes // MB})")
    p.add_argument("--max-video-seconds", type=float, default=DEFAULTS.max_video_seconds,
                   help=f"longest clip of a video job (default: {DEFAULTS.max_video_seconds:g} s)")
    p.add_argument("--max-video-frames", type=int, default=DEFAULTS.max_video_frames,
                   help=f"most frames of a video job (default: {DEFAULTS.max_video_frames})")
    p.add_argument("--max-video-pixels", type=int, default=DEFAULTS.max_video_pixels,
                   help=f"largest frame of an uploaded clip in pixels (default: {DEFAULTS.max_video_pixels:,})")
    p.add_argument("--max-video-size", type=int, default=DEFAULTS.max_video_size,
                   help=f"largest output size of a video job (default: {DEFAULTS.max_video_size})")
    p.add_argument("--max-video-iterations", type=int, default=DEFAULTS.max_video_iterations,
                   help="most iterations of a video job, over all its frames (default: "
                   f"{DEFAULTS.max_video_iterations:,})")
    p.add_argument("--memory-limit", type=float, default=None, metavar="GIB",
                   help="GiB one job may use; a job estimated to need more fails with a message "
                   "(default: the memory available when it starts). Clients cannot set it")
    p.add_argument("--cluster", default=None, metavar="ADDRESS", help="run the jobs as Ray "
                   "tasks on this cluster (auto, ray://HOST:PORT or local; needs nstyle[cluster]) "
                   "instead of in this process; --workers jobs at a time")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    token = args.token if args.token is not None else os.environ.get("NSTYLE_TOKEN")
    if token is not None and not token.strip():  # an empty token would switch auth off
        where = "--token" if args.token is not None else "NSTYLE_TOKEN"
        raise BadOption(f"{where} is empty: give a token, or leave it out to run without one "
                        "(this machine only)")
    public = list(args.public_host)
    if not _is_loopback(args.host) and not _is_wildcard(args.host):
        public.append(args.host)  # the address it listens on is a name it is reached under
    try:
        return ServiceSettings(
            data_dir=args.data, token=token, public_hosts=tuple(public),
            workers=args.workers, max_upload_bytes=int(args.max_upload_mb * MB),
            max_pixels=args.max_pixels, max_styles=args.max_styles, max_queue=args.max_queue,
            max_size=args.max_size, max_iterations=args.max_iterations,
            max_megapixel_iterations=args.max_megapixel_iterations,
            max_request_pixels=args.max_request_pixels, max_field_chars=args.max_field_chars,
            memory_limit_gib=args.memory_limit, cluster=args.cluster,
            max_video_upload_bytes=int(args.max_video_mb * MB), max_video_seconds=args.max_video_seconds,
            max_video_frames=args.max_video_frames, max_video_pixels=args.max_video_pixels,
            max_video_size=args.max_video_size, max_video_iterations=args.max_video_iterations)
    except ValueError as exc:
        raise BadOption(str(exc)) from None


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(argv: Sequence[str], parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> None:
    args = build_parser(parser_class).parse_args(argv)
    settings = settings_from_args(args)
    try:
        import uvicorn

        from nstyle.service.app import create_app
    except ImportError as exc:
        raise BadOption(f"'nstyle serve' needs the service extra ({exc.name} is missing): "
                        "pip install 'nstyle[service]'") from None
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    if not _is_loopback(args.host) and settings.token is None:
        print(f"nstyle serve: warning: listening on {args.host} without --token: anyone who "
              "can reach this port can submit and delete jobs"
              + ("" if settings.public_hosts else "; requests are answered only when addressed "
                 "to 127.0.0.1 or localhost (name the others with --public-host)"), file=sys.stderr)
    from nstyle.service.store import FolderInUse

    try:
        app = create_app(settings)
    except FolderInUse as exc:
        raise BadOption(str(exc)) from None
    except OSError as exc:
        raise BadOption(f"cannot use the data folder {args.data!r}: {exc}") from None
    print(f"nstyle serve: http://{args.host}:{args.port}/ (data in {settings.data_dir.resolve()})",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)


def default_gui_data() -> Path:
    """Where ``nstyle gui`` keeps its jobs: the user's data folder, not the current one
    (someone who starts it from a menu has no meaningful current folder)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("nstyle")) / "jobs"


def gui(argv: Sequence[str], parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> None:
    p = parser_class(prog="nstyle gui", description="Start nstyle's web page on this machine "
                     "only (127.0.0.1, a free port) and open it in the default browser. "
                     "Ctrl+C (or closing this window) stops it; jobs are kept.")
    p.add_argument("--data", default=None, help="folder for the jobs (default: "
                   f"{default_gui_data()})")
    p.add_argument("--no-browser", action="store_true", help="only print the address")
    args = p.parse_args(argv)
    try:
        import uvicorn

        from nstyle.service.app import create_app
        from nstyle.service.store import FolderInUse
    except ImportError as exc:
        raise BadOption(f"'nstyle gui' needs the service extra ({exc.name} is missing): "
                        "pip install 'nstyle[service]'") from None
    settings = ServiceSettings(data_dir=args.data or default_gui_data())
    try:
        app = create_app(settings)  # the data folder is created and locked when it starts
    except OSError as exc:
        raise BadOption(f"cannot use the data folder {str(settings.data_dir)!r}: {exc}") from None
    # bound here and handed to uvicorn: the port is free because we hold it (no race)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    threading.Thread(target=announce, args=(server, url, not args.no_browser, app.state.page_fetched),
                     daemon=True).start()
    try:
        server.run(sockets=[sock])
    except FolderInUse as exc:
        raise BadOption(str(exc)) from None
    if not server.started:  # the app did not start (its data folder is in use, ...)
        raise BadOption(f"nstyle gui could not start; is another one using {str(settings.data_dir)!r}?")


#: how long a browser that was started has to fetch the page before 'nstyle gui' says
#: it did not open (a browser command can start and die at once, and still count as run)
BROWSER_SECONDS = 10.0


def announce(server, url: str, open_browser: bool, page_fetched: threading.Event) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if not server.started:
        return
    if not open_browser:
        note = "(open it in a browser)"
    elif webbrowser.open(url) and page_fetched.wait(BROWSER_SECONDS):
        note = "(opened in your browser)"
    else:
        note = "(no browser opened it: open the address yourself)"
    print(f"nstyle gui: {url} {note}; Ctrl+C stops it", file=sys.stderr, flush=True)

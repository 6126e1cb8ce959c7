"""``nstyle serve``: parses the server's flags and runs the app under uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from typing import Sequence

from ..errors import BadOption
from .settings import MB, ServiceSettings

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
                   help="largest output size (longest side) a job may ask for "
                   f"(default: {DEFAULTS.max_size})")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    try:
        return ServiceSettings(
            data_dir=args.data, token=args.token or os.environ.get("NSTYLE_TOKEN") or None,
            workers=args.workers, max_upload_bytes=int(args.max_upload_mb * MB),
            max_pixels=args.max_pixels, max_styles=args.max_styles, max_queue=args.max_queue,
            max_size=args.max_size)
    except ValueError as exc:
        raise BadOption(str(exc)) from None


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

        from .app import create_app
    except ImportError as exc:
        raise BadOption(f"'nstyle serve' needs the service extra ({exc.name} is missing): "
                        "pip install 'nstyle[service]'") from None
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    if not _is_loopback(args.host) and settings.token is None:
        print(f"nstyle serve: warning: listening on {args.host} without --token: anyone who "
              "can reach this port can submit and delete jobs", file=sys.stderr)
    from .store import FolderInUse

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

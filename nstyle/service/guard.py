"""The middlewares that guard every request before any route sees it: who may address the
server (``OriginGuard``) and how large a body may be (``RequestGuard``)."""

from __future__ import annotations

from typing import Iterable, Optional
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nstyle.errors import BadOption
from nstyle.service.errors import OverLimit
from nstyle.service.uploads import fmt_bytes


class RequestGuard:
    """Refuses a request body over ``limit`` bytes before it is read (413), whether the
    client announced its length or streams it in chunks; and a multipart body that ends
    without its closing boundary (400): the form parser would take it and silently drop
    the field that was cut short."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        message = (f"the request is over this server's limit of {fmt_bytes(self.limit)} "
                   "(see GET /api/info for the per-image limit)")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": message}, status_code=413,
                               headers={"Connection": "close"})(scope, receive, send)
            return
        closing = _closing_delimiter(headers.get(b"content-type", b""))
        received, tail, closed = 0, b"", False

        async def guarded_receive() -> Message:
            nonlocal received, tail, closed
            msg = await receive()
            if msg["type"] != "http.request":
                return msg
            body = msg.get("body", b"")
            received += len(body)
            if received > self.limit:
                raise OverLimit(message)  # mapped to 413 by the NStyleError handler
            if closing is not None and not closed:
                window = tail + body  # the delimiter may straddle two chunks
                closed = closing in window
                tail = window[-len(closing):]
                if not msg.get("more_body", False) and not closed:
                    raise BadOption("the multipart body ends without its closing boundary: the "
                                    "upload was cut short; send it again")
            return msg

        await self.app(scope, guarded_receive, send)


def _closing_delimiter(content_type: bytes) -> Optional[bytes]:
    """b'--BOUNDARY--' of a multipart/form-data request, else None."""
    kind, _, params = content_type.decode("latin-1").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            return b"--" + value.strip().strip('"').encode("latin-1") + b"--"
    return None


#: on every answer: no content sniffing (an upload is served as the type of its real
#: format, never guessed from its bytes), and the page is never framed by another site
#: (which could trick its user into clicking Stylize)
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", b"frame-ancestors 'none'")]


class OriginGuard:
    """Lets through only requests addressed to one of ``host_names`` (the Host header:
    a DNS-rebinding page reaches 127.0.0.1 under its own name) and, when a browser says
    where a request comes from (Origin), only those from the server's own page, or from
    one of ``trusted_origins`` (the public names of a proxy in front of it). ``host_names``
    None: no check (a server with a token, which a cross-site page does not know). Adds
    ``SECURITY_HEADERS`` to every answer."""

    def __init__(self, app: ASGIApp, host_names: Optional[Iterable[str]],
                 trusted_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.host_names = None if host_names is None else frozenset(map(_host_name, host_names))
        self.trusted = frozenset(map(_host_name, trusted_origins))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *SECURITY_HEADERS]}
            await send(msg)

        problem = self.host_names is not None and self.refusal(scope)
        if problem:
            await JSONResponse({"detail": problem}, status_code=403)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> Optional[str]:
        """Why this request is refused, or None."""
        assert self.host_names is not None
        hosts = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"host"]
        origins = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"origin"]
        if len(hosts) > 1 or len(origins) > 1:
            return "a request may carry one Host and one Origin header"
        host = hosts[0] if hosts else None  # none: not a browser (they always send it)
        if host is not None and _host_name(host) not in self.host_names:
            return (f"this server answers requests addressed to {', '.join(sorted(self.host_names))}, "
                    f"not {host!r}; to reach it under that name, start it with --public-host "
                    f"{_host_name(host)} (or with --token)")
        if origins:
            origin = origins[0]
            try:  # 'null' (a sandboxed frame, a file:// page) is no site of ours either
                parts = urlsplit(origin) if origin != "null" else None
                name = parts.hostname if parts is not None else None
            except ValueError:
                parts = name = None
            same_site = parts is not None and host is not None and parts.netloc.lower() == host.lower()
            trusted = name is not None and _host_name(name) in self.trusted
            if parts is None or parts.scheme not in ("http", "https") or not (same_site or trusted):
                return (f"a request from another site ({origin}) was refused: this server takes "
                        "requests from its own page and from programs only (start it with "
                        "--public-host NAME if a proxy serves it as NAME)")
        return None


def _host_name(host: str) -> str:
    """'LocalHost.:8000' -> 'localhost', '[::1]:8000' -> '::1': the name, without its port."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host[:-1] if host.endswith(".") else host

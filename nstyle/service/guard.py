"""The middleware that guards request bodies before any route reads them."""

from __future__ import annotations

from typing import Optional

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

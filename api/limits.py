"""Bounds on what a request may cost before any route runs: its body's size and the time it
takes to arrive.

The body is read whole in the event loop (no thread of the pool waits on a slow client), so
no route ever sees a truncated body. A body over the limit is read and thrown away, up to
`discard_bytes`, before the 413 is sent and the connection closed: a server that answers
and closes while the client is still sending leaves unread bytes in its socket, the kernel
resets the connection, and a client that writes its whole body before reading (most do,
without `Expect: 100-continue`) sees the reset instead of the 413. A client that announced
`Expect: 100-continue` waits for the server's word before sending, so its 413 goes at once.
"""

from __future__ import annotations

import anyio

from api import errors


class RequestLimits:
    """ASGI middleware: 413 for a body over `limit_bytes` (declared or streamed), 408 for one
    still arriving `timeout_s` after the request began; both close the connection."""

    def __init__(self, app, limit_bytes: int, timeout_s: float, discard_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.timeout_s = timeout_s
        self.discard_bytes = max(discard_bytes, limit_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        too_large = declared is not None and (
            not declared.isdigit() or int(declared) > self.limit_bytes
        )
        if too_large and (
            b"100-continue" in headers.get(b"expect", b"").lower()
            or not declared.isdigit()
            or int(declared) > self.discard_bytes
        ):  # the client waits for this answer, or would send more than is worth reading
            return await errors.body_too_large(self.limit_bytes)(scope, receive, send)
        body, read, more = bytearray(), 0, True
        with anyio.move_on_after(self.timeout_s) as deadline:
            while more and read <= self.discard_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                read += len(chunk)
                too_large = too_large or read > self.limit_bytes
                if not too_large:
                    body += chunk
        if too_large:
            return await errors.body_too_large(self.limit_bytes)(scope, receive, send)
        if deadline.cancelled_caught:
            return await errors.body_too_slow(self.timeout_s)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

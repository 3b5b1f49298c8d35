"""Request bodies as LXD takes them: always JSON, and never larger than the limit (413).

LXD reads every body as JSON whatever its Content-Type says (curl -d sends a form
type); FastAPI would not, so the header is normalised here before routing.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _TooLarge(Exception):
    pass


def _error_body(limit: int) -> bytes:
    return json.dumps({"type": "error", "status": "", "status_code": 0, "operation": "",
                       "error_code": 413, "error": f"Request body larger than {limit} bytes",
                       "metadata": None}).encode()


class RequestBodyGuard:
    """Pure ASGI middleware: JSON content type, Content-Length checked, chunked bodies counted."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(n, v) for n, v in scope.get("headers", []) if n != b"content-type"]
        length = None
        for name, value in headers:
            if name == b"content-length" and value.isdigit():
                length = int(value)
                if length > self.max_bytes:
                    await self._refuse(send)
                    return
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        if length is None and scope.get("method") in _BODY_METHODS:
            # No length announced (chunked): read the body first, at most the limit, so
            # that one too large is a 413 here, not a parse error in the app.
            receive = await self._buffered(receive)
            if receive is None:
                await self._refuse(send)
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _buffered(self, receive: Receive) -> Receive | None:
        """The whole body read (None if it is over the limit), then replayed."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                messages = [message]
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                messages = [{"type": "http.request", "body": b"".join(chunks),
                             "more_body": False}]
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay

    async def _refuse(self, send: Send) -> None:
        body = _error_body(self.max_bytes)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

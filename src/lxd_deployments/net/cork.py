"""One write per answer: the head and the body of a response leave together.

uvicorn writes an answer's head (`http.response.start`) and its body as two writes on
the transport: over TLS two records, and two system calls either way, each of which,
on loopback, runs the receiver's network stack too. A `CorkedTransport` keeps what is
written during one turn of the event loop and writes it at the end of that turn, as
one piece: for a small answer (a governor's URL list) that is half the work of sending
it. Nothing is held longer than the turn: a close flushes first, an abort drops it.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CorkedTransport:
    """A transport whose writes of one loop turn are joined (everything else is the
    wrapped transport's)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

"""An attacker in a process of its own: many TLS (or bare TCP) connections to the
service's HTTPS port, held idle or fed a header byte a second, reporting what became of
each as one JSON line on stdout when done.

It runs apart from the test process so that the test's probe of the admin socket
measures the service, not a test process busy with a thousand handshakes.

    python -m tests.integration.flood MODE HOST PORT COUNT [HOLD_SECONDS]

MODE `slowloris`: TLS, then "GET / HTTP/1.1\\r\\nX-a: b" one byte a second until the
service closes (each connection's seconds from handshake to close, and its first bytes
received); `idle`: TLS, then nothing (handshakes completed, refused, closed within
HOLD_SECONDS); `tcp`: a TCP connection that never starts TLS (seconds to close).
After the connections are made it prints `{"ready": ...}`, then holds them until every
one is closed or HOLD_SECONDS passed, then prints the outcome.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time

CONNECT_CONCURRENCY = 32


class Outcome:
    def __init__(self) -> None:
        self.established = 0
        self.refused = 0
        self.closed_after: list[float] = []
        self.first_bytes: list[str] = []


async def _open(mode: str, host: str, port: int, context: ssl.SSLContext):
    if mode == "tcp":
        return await asyncio.open_connection(host, port)
    return await asyncio.open_connection(host, port, ssl=context, ssl_handshake_timeout=30)


async def _connection(mode: str, host: str, port: int, context: ssl.SSLContext,
                      gate: asyncio.Semaphore, outcome: Outcome, hold: float,
                      ready: asyncio.Event) -> None:
    async with gate:
        try:
            reader, writer = await _open(mode, host, port, context)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            outcome.refused += 1
            return
    outcome.established += 1
    start = time.monotonic()
    await ready.wait()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-a: " + b"b" * 1000
    sent = 0
    try:
        while time.monotonic() - start < hold:
            if mode == "slowloris" and sent < len(head):
                writer.write(head[sent:sent + 1])
                sent += 1
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except asyncio.TimeoutError:
                continue
            if not data:
                break
            outcome.first_bytes.append(data[:300].decode(errors="replace"))
            # The service answered (an error, then it closes): wait for the close.
            while await asyncio.wait_for(reader.read(4096), hold):
                pass
            break
        else:
            return  # still open when the hold ended
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        pass
    outcome.closed_after.append(round(time.monotonic() - start, 3))
    writer.close()


async def main(mode: str, host: str, port: int, count: int, hold: float) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outcome, gate, ready = Outcome(), asyncio.Semaphore(CONNECT_CONCURRENCY), asyncio.Event()
    tasks = [asyncio.create_task(_connection(mode, host, port, context, gate, outcome, hold,
                                             ready)) for _ in range(count)]
    while outcome.established + outcome.refused < count:
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": True, "established": outcome.established,
                      "refused": outcome.refused}), flush=True)
    ready.set()
    await asyncio.gather(*tasks)
    print(json.dumps({"established": outcome.established, "refused": outcome.refused,
                      "closed_after": sorted(outcome.closed_after),
                      "first_bytes": sorted(set(outcome.first_bytes))}), flush=True)


if __name__ == "__main__":
    mode_arg, host_arg, port_arg, count_arg = sys.argv[1:5]
    hold_arg = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    asyncio.run(main(mode_arg, host_arg, int(port_arg), int(count_arg), hold_arg))

"""`GET /1.0/events`: the events stream, a websocket as LXD's own, for governors that
cannot receive webhooks (behind NAT). Each message is one event object, the same as a
webhook's body.

Query: `type` (comma separated event types or classes: `lifecycle`, `scaling`,
`metrics`, `instance-deleted`, ...; default all), `project` (default `default`) or
`all-projects=true`, `deployment` (one deployment of the project). A caller only ever
gets the events of the deployments it may see: an admin every deployment's, a governor
those of its keys' deployments (whatever it asks for).

Revocation reaches an open stream: whenever an access is taken away (a key deleted or
changed, a certificate removed, a deployment deleted: `Core.access_changed`), and at
least every `RECHECK_SECONDS` in any case (a certificate that expires, a change made by
another process), the caller is read again from the store; a stream whose caller is no
longer identified, or no longer holds a key of every deployment it streams, is closed
(1008, "access revoked").

Beside them come LXD's own messages (`api/lxd_shape.py`): `operation` events for
the caller's own operations (an admin's: all), and LXD `lifecycle` events translated
from the service's instance events. `type=operation`, `type=lifecycle` and `type=logging`
select them as in LXD (`lifecycle` also selects the service's lifecycle class; no
`logging` message is ever sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from ...auth.caller import Caller
from ...auth.dependencies import current_caller, visible_deployment_ids
from ...auth.identify import refreshed
from ...core.context import Core
from ...core.deployments import require_deployment
from ...core.events import EVENT_CLASSES, EVENT_TYPES, Event, OperationEvent
from ...errors import DeploymentsError
from ..dependencies import DEFAULT_PROJECT
from ..lxd_shape import LIFECYCLE, LXD_TYPES, OPERATION, lifecycle_messages

logger = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

# Close codes: policy violation (bad query, not allowed) and "try again later" (the
# service stops, or the client fell too far behind).
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
# Seconds between checks of an open stream's caller when nothing signalled a change.
RECHECK_SECONDS = 60.0


def parse_types(value: str) -> frozenset[str] | None:
    wanted = frozenset(t.strip() for t in value.split(",") if t.strip())
    if not wanted:
        return None
    unknown = wanted - EVENT_TYPES - EVENT_CLASSES - LXD_TYPES
    if unknown:
        raise ValueError(f"unknown event type(s): {', '.join(sorted(unknown))}")
    return wanted


# Any authenticated caller (the app's default policy for websockets); what it gets is
# filtered below by `visible_deployment_ids`.
@router.websocket("/1.0/events")
async def events_stream(websocket: WebSocket, type: str = "",
                        project: str = DEFAULT_PROJECT, deployment: str | None = None,
                        all_projects: Annotated[bool, Query(alias="all-projects")] = False):
    core: Core = websocket.app.state.core
    bus = core.events
    if bus is None:
        await websocket.close(code=CLOSE_TRY_AGAIN, reason="events are not enabled")
        return
    try:
        types = parse_types(type)
    except ValueError as err:
        await websocket.close(code=CLOSE_POLICY, reason=str(err))
        return
    visible = visible_deployment_ids(websocket.scope)
    only_id = None
    if deployment is not None:
        try:
            with core.db.read() as conn:
                only_id = require_deployment(conn, project, deployment).id
        except DeploymentsError as err:
            await websocket.close(code=CLOSE_POLICY, reason=err.message)
            return
        if visible is not None and only_id not in visible:
            await websocket.close(code=CLOSE_POLICY, reason="Deployment not found")
            return

    caller = current_caller(websocket)

    def ours_wanted(event: Event) -> bool:
        return types is None or event.type in types or event.event_class in types

    def lxd_lifecycle_wanted() -> bool:
        return types is None or LIFECYCLE in types

    def accept(event: Event | OperationEvent) -> bool:
        if isinstance(event, OperationEvent):
            if not (types is None or OPERATION in types) or not caller.owns(event.owner):
                return False
            return all_projects or event.project == project
        if visible is not None and event.deployment_id not in visible:
            return False
        if only_id is not None and event.deployment_id != only_id:
            return False
        if only_id is None and not all_projects and event.project != project:
            return False
        return ours_wanted(event) or (lxd_lifecycle_wanted()
                                      and bool(lifecycle_messages(event)))

    def messages(event: Event | OperationEvent) -> list[dict]:
        if isinstance(event, OperationEvent):
            return [event.to_api()]
        sent = [event.to_api()] if ours_wanted(event) else []
        return sent + (lifecycle_messages(event) if lxd_lifecycle_wanted() else [])

    scope = visible if only_id is None else frozenset({only_id})
    # Subscribed before the handshake completes: a client that sends a request once
    # connected (LXD's Go client does, then waits on the operation's events) misses none.
    subscription = bus.subscribe(asyncio.get_running_loop(), accept, deployment_ids=scope)
    try:
        await websocket.accept()
    except BaseException:
        bus.unsubscribe(subscription)
        raise
    closed = asyncio.ensure_future(_until_disconnected(websocket))
    access = _AccessWatch(core, asyncio.get_running_loop())
    try:
        while True:
            getter = asyncio.ensure_future(subscription.queue.get())
            changed = asyncio.ensure_future(access.changed.wait())
            done, _ = await asyncio.wait({getter, closed, changed}, timeout=RECHECK_SECONDS,
                                         return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if closed in done:
                getter.cancel()
                return
            if changed in done or not done:
                access.changed.clear()
                if not await _still_allowed(core, caller, scope):
                    getter.cancel()
                    logger.info("events stream of %s closed: access revoked",
                                caller.identity)
                    await websocket.close(code=CLOSE_POLICY, reason="access revoked")
                    return
            if not getter.done():  # (it may have got an event during the check above)
                getter.cancel()
                continue
            event = getter.result()
            if event is None:  # fell too far behind
                await websocket.close(code=CLOSE_TRY_AGAIN, reason="too slow: events dropped")
                return
            for message in messages(event):
                await websocket.send_text(json.dumps(message, separators=(",", ":")))
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        access.stop()
        bus.unsubscribe(subscription)
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closed


class _AccessWatch:
    """An asyncio event set (from any thread) whenever the core says an access changed."""

    def __init__(self, core: Core, loop: asyncio.AbstractEventLoop) -> None:
        self._core = core
        self._loop = loop
        self.changed = asyncio.Event()
        core.access_listeners.append(self._signal)

    def _signal(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to wake
            self._loop.call_soon_threadsafe(self.changed.set)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._core.access_listeners.remove(self._signal)


async def _still_allowed(core: Core, caller: Caller, scope: frozenset[int] | None) -> bool:
    """Whether the stream's caller, read again from the store, may still see all it gets."""
    def read() -> Caller:
        with core.db.read() as conn:
            return refreshed(conn, caller)

    now = await anyio.to_thread.run_sync(read)
    if not now.is_authenticated:
        return False
    if now.is_admin:
        return True
    return scope is not None and scope <= {g.deployment_id for g in now.grants}


async def _until_disconnected(websocket: WebSocket) -> None:
    """Read (and drop) what the client sends until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return

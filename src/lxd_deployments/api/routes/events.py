"""`GET /1.0/events`: the events stream, a websocket as LXD's own, for governors that
cannot receive webhooks (behind NAT). Each message is one event object, the same as a
webhook's body.

Query: `type` (comma separated event types or classes: `lifecycle`, `scaling`,
`metrics`, `instance-deleted`, ...; default all), `project` (default `default`) or
`all-projects=true`, `deployment` (one deployment of the project). A caller only ever
gets the events of the deployments it may see: an admin every deployment's, a governor
those of its keys' deployments (whatever it asks for).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from ...auth.dependencies import visible_deployment_ids
from ...core.context import Core
from ...core.deployments import require_deployment
from ...errors import DeploymentsError
from ...webhooks.events import EVENT_CLASSES, EVENT_TYPES, Event
from ..dependencies import DEFAULT_PROJECT

logger = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

# Close codes: policy violation (bad query, not allowed) and "try again later" (the
# service stops, or the client fell too far behind).
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013


def parse_types(value: str) -> frozenset[str] | None:
    wanted = frozenset(t.strip() for t in value.split(",") if t.strip())
    if not wanted:
        return None
    unknown = wanted - EVENT_TYPES - EVENT_CLASSES
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

    def accept(event: Event) -> bool:
        if visible is not None and event.deployment_id not in visible:
            return False
        if only_id is not None and event.deployment_id != only_id:
            return False
        if only_id is None and not all_projects and event.project != project:
            return False
        return types is None or event.type in types or event.event_class in types

    await websocket.accept()
    scope = visible if only_id is None else frozenset({only_id})
    subscription = bus.subscribe(asyncio.get_running_loop(), accept, deployment_ids=scope)
    closed = asyncio.ensure_future(_until_disconnected(websocket))
    try:
        while True:
            getter = asyncio.ensure_future(subscription.queue.get())
            done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed in done:
                getter.cancel()
                return
            event = getter.result()
            if event is None:  # fell too far behind
                await websocket.close(code=CLOSE_TRY_AGAIN, reason="too slow: events dropped")
                return
            await websocket.send_text(json.dumps(event.to_api(), separators=(",", ":")))
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        bus.unsubscribe(subscription)
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closed


async def _until_disconnected(websocket: WebSocket) -> None:
    """Read (and drop) what the client sends until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return

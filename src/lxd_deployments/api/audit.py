"""The audit log as ASGI middleware: every change asked of the API, who asked, the result.

Each POST, PUT, PATCH and DELETE of an authenticated caller (launches included, refused
attempts too) becomes a row of the `audit_log` table and a line of the service log:
how the caller authenticated, its identity (`unix`, or the certificate's name and
fingerprint), the deployment key the request used, the method and path, the HTTP
status, and the operation id of a change that became an operation (or the error message
of a refusal). The row is written before the answer leaves, so whoever got an answer
finds it in `GET /1.0/audit`. Anonymous requests never reach a handler (401, logged by
the authentication middleware) and are not stored, so that nobody unauthenticated can
fill the store. Bodies, keys and tokens are never recorded.

Bounded three ways: each row is small (texts cut, see `store.audit.FIELD_LIMITS`);
rows older than `audit.retention` and past the newest `audit.max_rows` are pruned
(every `PRUNE_EVERY_ROWS` rows or `PRUNE_EVERY_SECONDS`, whichever comes first); and a
caller that spent its budget of refused changes (`refusals.RefusalBudget`) is answered
429 without a row per request (one a minute at most is recorded).
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth.middleware import request_auth
from ..errors import TooManyRequests
from ..store import Database
from ..store import audit as store
from .envelope import error_response
from .errors import status_of
from .refusals import RefusalBudget, budget_key

logger = logging.getLogger("lxd_deployments.audit")

AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PRUNE_EVERY_ROWS = 1000
PRUNE_EVERY_SECONDS = 60.0
_OPERATION_PREFIX = "/1.0/operations/"


def _operation_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"location":
            location = value.decode("latin-1")
            if location.startswith(_OPERATION_PREFIX):
                # The id, without the `?project=` an operation URL may carry.
                return location.removeprefix(_OPERATION_PREFIX).partition("?")[0]
    return ""


def _error_of(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return str(answer.get("error") or "") if isinstance(answer, dict) else ""


def _project_of(path: str, query: str) -> str:
    """The LXD project a deployments request addresses (`default` unless named)."""
    named = (parse_qs(query).get("project") or [""])[-1]
    return named or ("default" if path.startswith("/1.0/deployments") else "")


class AuditLog:
    def __init__(self, app: ASGIApp, db: Database, *, retention: float, max_rows: int,
                 refused_rate: float, refused_burst: int) -> None:
        self.app = app
        self.db = db
        self.retention = retention
        self.max_rows = max_rows
        self.budget = RefusalBudget(refused_rate, refused_burst)
        self._since_prune = 0
        self._last_prune = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = request_auth(scope)
        if (scope["type"] != "http" or scope.get("method") not in AUDITED_METHODS
                or auth is None or not auth.caller.is_authenticated):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        recorded = False

        async def write(status: int, headers: list, body: bytes) -> None:
            nonlocal recorded
            recorded = True
            caller, grant = auth.caller, auth.grant
            query = scope.get("query_string", b"").decode("latin-1")
            entry = store.AuditEntry(
                auth_method=caller.method, caller_kind=caller.kind, identity=caller.identity,
                fingerprint=caller.fingerprint,
                deployment_key=grant.label if grant is not None else "",
                method=scope["method"], path=scope["path"] + (f"?{query}" if query else ""),
                project=_project_of(scope["path"], query),
                status_code=status, operation=_operation_id(headers) if status == 202 else "",
                error=_error_of(body) if status >= 400 else "")
            logger.info("%s %s by %s%s (%s): %d%s", entry.method, entry.path[:320],
                        entry.identity, f" key {entry.deployment_key}"
                        if entry.deployment_key else "", entry.auth_method, status,
                        f" operation {entry.operation}" if entry.operation else
                        f" {entry.error[:320]}" if entry.error else "")
            try:
                await anyio.to_thread.run_sync(self._record, entry)
            except Exception:  # the change is made: answer it, but say the log lacks it
                logger.exception("could not write the audit log entry above")

        key = budget_key(auth.caller)
        if key is not None:
            wait, first = self.budget.check(key)
            if wait > 0:
                await self._too_many(scope, receive, send, wait, write if first else None)
                return

        async def audited_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held until the entry is written
                return
            if message["type"] == "http.response.body" and start is not None:
                held, start = start, None
                status = held["status"]
                if key is not None and 400 <= status < 500:
                    self.budget.spend(key)
                await write(status, list(held.get("headers") or []),
                            message.get("body", b""))
                await send(held)
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not recorded:
                await write(500, [], b"")
            raise

    async def _too_many(self, scope: Scope, receive: Receive, send: Send, wait: float,
                        write) -> None:
        """429 in LXD's envelope, with `Retry-After`; recorded only when `write` is given."""
        seconds = max(1, math.ceil(wait))
        error = TooManyRequests(
            f"Too many refused requests from this certificate: try again in {seconds} s "
            "(further refusals until then are answered 429 and not recorded one by one)")
        response = error_response(status_of(error), error.message)
        response.headers["Retry-After"] = str(seconds)
        if write is not None:
            await write(response.status_code, [], response.body)
        await response(scope, receive, send)

    def _record(self, entry: store.AuditEntry) -> None:
        with self.db.write() as conn:
            store.record(conn, entry)
            self._since_prune += 1
            now = time.monotonic()
            if self._since_prune >= PRUNE_EVERY_ROWS or now - self._last_prune >= \
                    PRUNE_EVERY_SECONDS:
                self._since_prune, self._last_prune = 0, now
                cutoff = (datetime.now(timezone.utc)
                          - timedelta(seconds=self.retention)).isoformat()
                pruned = store.prune(conn, recorded_before=cutoff, keep_rows=self.max_rows)
                if pruned:
                    logger.info("audit log: %d row(s) pruned (retention %d s, at most %d "
                                "rows)", pruned, self.retention, self.max_rows)

"""Authentication as ASGI middleware: every request gets its `Caller` before routing.

Each server the daemon runs hands the same app its requests through `ListenerApp`,
which marks them with the listener they came in on (the admin unix socket, HTTPS, ...).
A request with no mark is anonymous: an app served without a listener fails closed.

`Authenticate` then resolves the caller (see `identify.py`) and keeps it in the scope
(`request_auth(scope)`), where the route dependencies (`dependencies.py`) and the audit
log find it. An anonymous caller is refused with 401 right here, on every route but
the public ones (`GET /` and `GET /1.0`), unknown routes included, before any handler
or body parsing runs; a websocket handshake (`GET /1.0/events`) gets the same 401.

A readiness token (an instance's, `instance_token.py`) is fenced here as well: refused
(401), or shown for anything but its one request (403), it never reaches a route; such
refusals spend a budget per instance they name, past which they are answered 429 and
no longer logged one by one.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from ..pki import fingerprint_of_der
from ..store import Database
from . import instance_token
from .cache import CallerCache
from .caller import METHOD_INSTANCE_TOKEN, METHOD_JWT, Caller, Grant, Listener
from .identify import (
    DEFAULT_PROJECT,
    Authenticators,
    Credentials,
    identify,
    identify_certificate,
)

if TYPE_CHECKING:
    from ..api.refusals import RefusalBudget

logger = logging.getLogger("lxd_deployments.auth")

LISTENER_KEY = "lxd_deployments.listener"
AUTH_KEY = "lxd_deployments.auth"
# The connection-level facts a server puts in `scope["extensions"]` (see tls.py).
TLS_EXTENSION = "tls"
UNIX_PEER_EXTENSION = "lxd_deployments.unix_peer"

# The ASGI extension that lets a websocket handshake be answered with an HTTP response.
WEBSOCKET_DENIAL = "websocket.http.response"

PUBLIC_ROUTES = frozenset({("GET", "/"), ("GET", "/1.0"), ("HEAD", "/"), ("HEAD", "/1.0")})


@dataclass
class RequestAuth:
    """The caller of one request, and the key an authorization check used (for the
    audit log). Mutable on purpose: middleware further in copies the scope dict, and
    this object is what they all share."""

    caller: Caller
    grant: Grant | None = None


def request_auth(scope: Scope) -> RequestAuth | None:
    return scope.get(AUTH_KEY)


class ListenerApp:
    """The app as one listener serves it: marks each request with `listener`."""

    def __init__(self, app: ASGIApp, listener: Listener) -> None:
        self.app = app
        self.listener = Listener(listener)

    @property
    def state(self) -> Any:
        """The wrapped app's state (`app.state.core`), for whoever holds this wrapper."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[LISTENER_KEY] = self.listener
        await self.app(scope, receive, send)


def _peer_certificate(scope: Scope) -> bytes | None:
    """The client certificate of the connection (DER), from the ASGI TLS extension."""
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION) or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])


def credentials_of(scope: Scope) -> Credentials:
    authorization = None
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            authorization = value.decode("latin-1")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    projects = query.get("project") or [DEFAULT_PROJECT]
    peer = (scope.get("extensions") or {}).get(UNIX_PEER_EXTENSION) or {}
    return Credentials(listener=scope.get(LISTENER_KEY),
                       peer_certificate=_peer_certificate(scope),
                       authorization=authorization, project=projects[-1] or DEFAULT_PROJECT,
                       unix_uid=peer.get("uid"))


def _error_body(message: str, code: int = 401) -> bytes:
    return json.dumps({"type": "error", "status": "", "status_code": 0, "operation": "",
                       "error_code": code, "error": message, "metadata": None}).encode()


def _instance_refusal(caller: Caller, scope: Scope, credentials: Credentials
                      ) -> tuple[int, str] | None:
    """Why a request with a readiness token is refused here, before any route: the
    token was refused (401), or it is shown for anything but its one request (403)."""
    if caller.method != METHOD_INSTANCE_TOKEN:
        return None
    if caller.instance is None:
        return 401, caller.reason or "Not authorized"
    if scope["type"] != "http" or not instance_token.allows(
            caller.instance, scope.get("method", ""), scope["path"], credentials.project):
        return 403, ("Not authorized: a readiness token only answers its own instance's "
                     f"launching hook: POST {instance_token.lifecycle_path(caller.instance)}"
                     f"?project={caller.instance.project}")
    return None


class Authenticate:
    """Resolve each request's caller; refuse anonymous callers off the public routes."""

    def __init__(self, app: ASGIApp, db: Database,
                 authenticators: Authenticators | None = None,
                 cache: CallerCache | None = None,
                 refusals: RefusalBudget | None = None) -> None:
        self.app = app
        self.db = db
        self.authenticators = authenticators or Authenticators()
        self.cache = cache
        # Refused readiness tokens spend this budget, per the record they name (apart
        # from the audit log's); None: not limited.
        self.refusals = refusals

    async def _identify(self, credentials: Credentials) -> Caller:
        """The caller: a client certificate's from the cache when it has it (no store,
        no thread), else from the store."""
        if self.cache is None or credentials.listener is not Listener.HTTPS or \
                credentials.authorization is not None or credentials.peer_certificate is None:
            return await anyio.to_thread.run_sync(
                identify, self.db, credentials, self.authenticators)
        fingerprint = fingerprint_of_der(credentials.peer_certificate)
        caller = self.cache.get(fingerprint)
        if caller is not None:
            return caller
        epoch = self.cache.epoch()
        caller, not_after = await anyio.to_thread.run_sync(
            identify_certificate, self.db, fingerprint)
        self.cache.put(fingerprint, caller, epoch, not_after)
        return caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        credentials = credentials_of(scope)
        if credentials.listener is Listener.UNIX:
            caller = Caller.unix_admin(credentials.unix_uid)  # no store lookup needed
        else:
            caller = await self._identify(credentials)
        scope[AUTH_KEY] = RequestAuth(caller)
        refusal = _instance_refusal(caller, scope, credentials)
        if refusal is None and (caller.is_authenticated
                                or (scope.get("method"), scope["path"]) in PUBLIC_ROUTES):
            await self.app(scope, receive, send)
            return
        code, message = refusal or (401, caller.reason or "Not authorized")
        headers: list[tuple[bytes, bytes]] = []
        if refusal is not None and self.refusals is not None:
            key = instance_token.budget_key(credentials.bearer_token or "")
            wait, _record = self.refusals.check(key)
            if wait > 0:
                # Spent: answered at once, not logged one by one (a flood of bad tokens
                # fills neither the log nor anything else). A good token is still
                # checked first, so no flood locks the rightful instance out.
                code, message = 429, ("Too many refused readiness tokens for this "
                                      f"instance: try again in {max(1, math.ceil(wait))} s")
                headers.append((b"retry-after", str(max(1, math.ceil(wait))).encode()))
            else:
                self.refusals.spend(key)
        if code != 429:
            logger.warning("refused (%d) %s %s from %s: %s", code, scope.get("method", "WS"),
                           scope["path"], _who(caller, scope), message)
        body = _error_body(message, code)
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
        if scope["type"] == "websocket":
            if WEBSOCKET_DENIAL not in (scope.get("extensions") or {}):
                # A server without the denial-response extension can only refuse the
                # handshake (a 403 on the wire).
                await send({"type": "websocket.close", "code": 4401})
                return
            # The same 401 and envelope as every other route, as the handshake's answer.
            await send({"type": "websocket.http.response.start", "status": code,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _who(caller: Caller, scope: Scope) -> str:
    client = scope.get("client")
    where = f"{client[0]}:{client[1]}" if client else "?"
    if caller.fingerprint:
        what = f"certificate {caller.fingerprint[:12]}"
    elif caller.method == METHOD_INSTANCE_TOKEN:
        what = caller.identity if caller.instance is not None else "readiness token"
    else:
        what = "bearer token" if caller.method == METHOD_JWT else "no credentials"
    return f"{where} ({what})"


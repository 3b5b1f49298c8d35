"""`create_app`: the ASGI application, built from a core so tests can inject their own."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from .. import __version__
from ..auth.cache import CallerCache
from ..auth.dependencies import default_policy
from ..auth.identify import Authenticators
from ..auth.middleware import Authenticate
from ..config import AuditSettings
from ..core import Core
from .audit import AuditLog
from .body import RequestBodyGuard
from .dependencies import LXDReady
from .errors import install_error_handlers
from .openapi import install_openapi
from .refusals import RefusalBudget
from .routes import (
    audit,
    certificates,
    changes,
    deployments,
    events,
    governor_sockets,
    instances,
    keys,
    metrics,
    operations,
    pets,
    placement_groups,
    refresh,
    scale_requests,
    scaling,
    server,
    shapes,
    webhooks,
)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def create_app(core: Core, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               authenticators: Authenticators | None = None,
               server_certificate: str | None = None,
               audit_settings: AuditSettings | None = None) -> FastAPI:
    """The app; serve it through `auth.middleware.ListenerApp` (a request that no listener
    marked is anonymous). `authenticators` adds bearer tokens to client certificates;
    `server_certificate` (PEM) is shown by `GET /1.0` when the service serves HTTPS;
    `audit_settings` bound the audit log and the refused requests of each caller."""
    app = FastAPI(
        title="LXD Deployments API",
        version=__version__,
        description="Deployments, shapes and keys that let governors scale applications "
                    "on LXD within bounds.",
        openapi_url="/1.0/openapi.json",
        docs_url=None,
        redoc_url=None,
        # A route that declares no authorization policy is for admins only.
        dependencies=[Depends(default_policy)],
    )
    app.state.core = core
    app.state.authenticators = authenticators or Authenticators()
    app.state.server_certificate = server_certificate
    install_error_handlers(app)
    # Work on instances waits for LXD and the startup reconcile (503 until then).
    on_instances = (instances, scaling, governor_sockets)
    for module in (server, deployments, shapes, placement_groups, pets, instances, changes,
                   keys, certificates, operations, webhooks, scale_requests, scaling, refresh,
                   governor_sockets, events, audit, metrics):
        app.include_router(module.router,
                           dependencies=[LXDReady] if module in on_instances else None)
    install_openapi(app)
    # The last added runs first: authenticate, then audit, then guard the body.
    app.add_middleware(RequestBodyGuard, max_bytes=max_body_bytes)
    audit_settings = audit_settings or AuditSettings()
    app.add_middleware(AuditLog, db=core.db, retention=audit_settings.retention,
                       max_rows=audit_settings.max_rows,
                       refused_rate=audit_settings.refused_rate,
                       refused_burst=audit_settings.refused_burst)
    # Callers of client certificates are cached while no change of access was told.
    # Refused readiness tokens have a budget of their own, at the same rate: were it the
    # audit log's, a flood of forged tokens naming an instance would spend the bucket
    # its rightful token's requests are checked against. (Kept per process.)
    app.add_middleware(Authenticate, db=core.db, authenticators=app.state.authenticators,
                       cache=CallerCache(lambda: core.generations.epoch),
                       refusals=RefusalBudget(audit_settings.refused_rate,
                                              audit_settings.refused_burst))
    return app

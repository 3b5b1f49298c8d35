"""`create_app`: the ASGI application, built from a core so tests can inject their own."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from .. import __version__
from ..auth.dependencies import default_policy
from ..auth.identify import Authenticators
from ..auth.middleware import Authenticate
from ..core import Core
from .audit import AuditLog
from .body import RequestBodyGuard
from .errors import install_error_handlers
from .openapi import install_openapi
from .routes import (
    audit,
    certificates,
    changes,
    deployments,
    events,
    governor_sockets,
    instances,
    keys,
    operations,
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
               server_certificate: str | None = None) -> FastAPI:
    """The app; serve it through `auth.middleware.ListenerApp` (a request that no listener
    marked is anonymous). `authenticators` adds bearer tokens to client certificates;
    `server_certificate` (PEM) is shown by `GET /1.0` when the service serves HTTPS."""
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
    for module in (server, deployments, shapes, placement_groups, instances, changes, keys,
                   certificates, operations, webhooks, scale_requests, scaling, refresh,
                   governor_sockets,
                   events, audit):
        app.include_router(module.router)
    install_openapi(app)
    # The last added runs first: authenticate, then audit, then guard the body.
    app.add_middleware(RequestBodyGuard, max_bytes=max_body_bytes)
    app.add_middleware(AuditLog, db=core.db)
    app.add_middleware(Authenticate, db=core.db, authenticators=app.state.authenticators)
    return app

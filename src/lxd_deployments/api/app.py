"""`create_app`: the ASGI application, built from a core so tests can inject their own."""

from __future__ import annotations

from fastapi import FastAPI

from .. import __version__
from ..core import Core
from .body import RequestBodyGuard
from .errors import install_error_handlers
from .openapi import install_openapi
from .routes import (
    certificates,
    changes,
    deployments,
    instances,
    keys,
    operations,
    server,
    shapes,
)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def create_app(core: Core, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(
        title="LXD Deployments API",
        version=__version__,
        description="Deployments, shapes and keys that let governors scale applications "
                    "on LXD within bounds.",
        openapi_url="/1.0/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.core = core
    install_error_handlers(app)
    for module in (server, deployments, shapes, instances, changes, keys, certificates,
                   operations):
        app.include_router(module.router)
    install_openapi(app)
    app.add_middleware(RequestBodyGuard, max_bytes=max_body_bytes)
    return app

"""`GET /1.0`: what this server is and which authentication methods it offers."""

from __future__ import annotations

from fastapi import APIRouter

from ... import __version__
from ..envelope import sync_response

router = APIRouter(tags=["server"])


@router.get("/1.0", summary="Server information")
def server_info():
    return sync_response({
        "api_version": "1.0",
        "api_extensions": ["deployments"],
        "api_status": "stable",
        "auth": "trusted",
        "auth_methods": ["unix"],
        "environment": {"server": "lxd-deployments", "server_version": __version__},
    })


@router.get("/", include_in_schema=False)
def root():
    return sync_response(["/1.0"])

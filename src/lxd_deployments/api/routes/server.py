"""`GET /1.0`: what this server is and which authentication methods it offers.

Public, as LXD's: anyone may ask (no certificate needed), and the answer says whether
the caller is trusted (`auth`), how it authenticated and which methods are offered
(`auth_methods`). The server certificate is shown too: a client pins it on `remote add`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ... import __version__
from ...auth.dependencies import CallerDep
from ...pki import fingerprint_of_pem
from ..envelope import sync_response

router = APIRouter(tags=["server"])


@router.get("/1.0", summary="Server information (public)")
def server_info(request: Request, caller: CallerDep):
    environment = {"server": "lxd-deployments", "server_version": __version__}
    certificate = request.app.state.server_certificate
    if certificate:
        environment["certificate"] = certificate
        environment["certificate_fingerprint"] = fingerprint_of_pem(certificate)
    info = {
        "api_version": "1.0",
        # What LXD's clients check before using a feature: pylxd refuses `project=`
        # without "projects", LXD's Go client a deployment call without "deployments".
        "api_extensions": ["deployments", "projects"],
        "api_status": "stable",
        "auth": "trusted" if caller.is_authenticated else "untrusted",
        "auth_methods": request.app.state.authenticators.methods,
        "public": False,
        "environment": environment,
    }
    if caller.is_authenticated:
        # Whether the service works with LXD yet (it starts without it, and waits).
        readiness = request.app.state.core.lxd_readiness
        environment["lxd_status"] = "ready" if readiness.ready else "unavailable"
        info["auth_user_name"] = caller.identity
        info["auth_user_method"] = caller.method
        info["auth_user_kind"] = caller.kind
    return sync_response(info)


@router.get("/", include_in_schema=False)
def root(caller: CallerDep):
    return sync_response(["/1.0"])

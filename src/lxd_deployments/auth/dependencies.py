"""FastAPI dependencies: each route declares what it needs, and gets the caller.

    @router.post("", dependencies=[AdminOnly])           # management: admins only
    def create(...): ...

    @router.get("/{name}", dependencies=[ReaderOnly])   # admin, or a key of the deployment
    def get(...): ...

    @router.post("/instances")
    def launch(..., access: WriterAccess):                # admin, or an rw key of it
        core.launch(..., owner=access.owner)

The deployment is the `{deployment}` path parameter (`{name}` on the deployment's own
URL) and the project is `?project=` (default `default`), exactly as the route reads them.
A route that declares none of these is for admins only (`default_policy`, installed on
the whole app), so a route added without a thought for authorization fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from ..errors import Forbidden, Unauthorized
from . import rules
from .caller import Caller, Grant
from .identify import DEFAULT_PROJECT
from .middleware import request_auth


def current_caller(request: HTTPConnection) -> Caller:
    """The caller the authentication middleware resolved (anonymous if none ran)."""
    auth = request_auth(request.scope)
    if auth is None:
        raise Unauthorized("Not authorized: the request was not authenticated")
    return auth.caller


async def _caller(request: HTTPConnection) -> Caller:
    return current_caller(request)


# The dependencies below only look at what the middleware already resolved: they are
# `async` so that FastAPI runs them on the event loop, not each on a worker thread (a
# thread hop costs more CPU than the whole check; a request declares several of them).
CallerDep = Annotated[Caller, Depends(_caller)]


@dataclass(frozen=True)
class Access:
    """What an authorization check found: the caller and, for a governor, the key used."""

    caller: Caller
    grant: Grant | None = None

    @property
    def owner(self) -> str | None:
        """The owner to record on operations (None for an admin: visible to admins only)."""
        return self.grant.owner if self.grant is not None else None


async def _admin(request: Request) -> Access:
    caller = current_caller(request)
    rules.require_admin(caller)
    return Access(caller)


def _target(request: Request) -> tuple[str, str]:
    params = request.path_params
    deployment = params.get("deployment", params.get("name", ""))
    return request.query_params.get("project") or DEFAULT_PROJECT, deployment


def _deployment_access(request: Request, *, write: bool) -> Access:
    caller = current_caller(request)
    project, deployment = _target(request)
    grant = rules.require_deployment(caller, project, deployment, write=False)
    if grant is not None:
        auth = request_auth(request.scope)
        if auth is not None:
            auth.grant = grant  # the audit log names the key used, refused or not
        if write:
            rules.require_writable(grant)
    return Access(caller, grant)


async def _reader(request: Request) -> Access:
    return _deployment_access(request, write=False)


async def _writer(request: Request) -> Access:
    return _deployment_access(request, write=True)


async def _writer_or_instance(request: Request) -> Access:
    """A hook's answer: an rw key (or admin), or the instance itself by its readiness
    token (the middleware let it through only for its own lifecycle URL; checked
    again here, so the route never depends on the middleware alone)."""
    caller = current_caller(request)
    if caller.instance is None:
        return _deployment_access(request, write=True)
    project, deployment = _target(request)
    params = request.path_params
    if (project, deployment, params.get("shape"), params.get("name")) != (
            caller.instance.project, caller.instance.deployment, caller.instance.shape,
            caller.instance.instance):
        raise Forbidden("Not authorized: a readiness token only answers its own "
                        "instance's launching hook")
    return Access(caller)


async def _authenticated(request: Request) -> Access:
    caller = current_caller(request)
    rules.require_authenticated(caller)
    return Access(caller)


async def _metrics(request: Request) -> Access:
    caller = current_caller(request)
    rules.require_metrics_reader(caller)
    return Access(caller)


# Declarations for routes.
AdminOnly = Depends(_admin)
ReaderOnly = Depends(_reader)
AdminAccess = Annotated[Access, Depends(_admin)]
ReaderAccess = Annotated[Access, Depends(_reader)]
WriterAccess = Annotated[Access, Depends(_writer)]
WriterOrInstanceAccess = Annotated[Access, Depends(_writer_or_instance)]
AnyCaller = Annotated[Access, Depends(_authenticated)]
MetricsReader = Depends(_metrics)

# What a route may declare, by the policy it stands for (`current_caller` alone: public,
# the route decides, as `GET /1.0` does).
POLICIES = {_admin: "admin", _reader: "reader", _writer: "writer", _metrics: "metrics",
            _writer_or_instance: "writer",
            _authenticated: "authenticated", current_caller: "public", _caller: "public"}
_POLICY_ATTRIBUTE = "_lxd_deployments_policy"


# When a route declares several, the strictest is what it stands for.
_STRICTNESS = ("admin", "metrics", "writer", "reader", "authenticated", "public")


def declared_policy(route: object) -> str | None:
    """The policy a route declares through its dependencies, or None."""
    if not hasattr(route, _POLICY_ATTRIBUTE):
        found = set()
        stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
        while stack:
            dependency = stack.pop()
            if dependency.call in POLICIES:
                found.add(POLICIES[dependency.call])
            stack.extend(dependency.dependencies)
        strictest = next((p for p in _STRICTNESS if p in found), None)
        setattr(route, _POLICY_ATTRIBUTE, strictest)
    return getattr(route, _POLICY_ATTRIBUTE)


async def default_policy(connection: HTTPConnection) -> None:
    """Installed on the whole app: a route that declares no policy is for admins only, so
    a route added without thinking about authorization fails closed. (A websocket route
    only needs an authenticated caller, and must filter what it sends by the caller.)"""
    route = connection.scope.get("route")
    if route is not None and declared_policy(route) is not None:
        return
    caller = current_caller(connection)
    if connection.scope["type"] == "websocket":
        rules.require_authenticated(caller)
    else:
        rules.require_admin(caller)


def visible_deployment_ids(scope) -> frozenset[int] | None:
    """The deployments whose data a caller may see: None (all) for an admin, the ids of
    its keys' deployments for a governor, none for anyone else."""
    auth = request_auth(scope)
    if auth is None:
        return frozenset()
    if auth.caller.is_admin:
        return None
    return frozenset(g.deployment_id for g in auth.caller.grants)

"""The service as the charm sees it: typed calls over its REST API (DeploymentsClient).

Nothing here knows about Juju. Every failure comes out as the client's `ClientError`
family (`APIError` with the service's own message, `ServiceUnreachable`), which the
charm turns into an action failure or a status.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from lxd_deployments.client import (
    APIError,
    ClientError,
    DeploymentsClient,
    OperationFailed,
    ServiceUnreachable,
)

__all__ = ["APIError", "ClientError", "Service", "ServiceUnreachable", "connect"]

# Seconds the charm waits for a (re)started service to answer before reporting Waiting.
READY_TIMEOUT = 30.0
# Seconds the `scale` action waits for the service's scaling operation.
OPERATION_TIMEOUT = 300


@contextmanager
def connect(socket: Path, *, timeout: float = 60.0) -> Iterator[Service]:
    """A Service on the local unix socket, closed afterwards."""
    client = DeploymentsClient(socket, timeout=timeout)
    try:
        yield Service(client)
    finally:
        client.close()


def _path(*parts: str) -> str:
    return "/1.0/" + "/".join(quote(p, safe="") for p in parts)


@dataclass(frozen=True)
class InstanceChange:
    """One instance the `scale` action launched or deleted, and how it went."""

    name: str
    action: str  # "launch" or "delete"
    status: str  # "done" or "failed"
    error: str = ""


@dataclass(frozen=True)
class ScaleResult:
    deployment: str
    shape: str
    before: int
    after: int
    requested: int
    # The count the service set out to reach (best effort may grant less than asked).
    granted: int
    changes: tuple[InstanceChange, ...] = field(default_factory=tuple)
    # The batch operation's error (the members that failed), or why it was not awaited.
    error: str = ""

    @property
    def failed(self) -> tuple[InstanceChange, ...]:
        return tuple(c for c in self.changes if c.status != "done")


class Service:
    """The deployments service's API, one method per thing the charm does."""

    def __init__(self, client: DeploymentsClient) -> None:
        self.client = client

    def _in(self, project: str) -> DeploymentsClient:
        return self.client.use_project(project)

    # --- health ------------------------------------------------------------------------

    def wait_ready(self, timeout: float = READY_TIMEOUT, interval: float = 0.5) -> None:
        """Return once `GET /1.0` answers; ServiceUnreachable after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.get("/1.0")
                return
            except ServiceUnreachable:
                if time.monotonic() >= deadline:
                    raise
            # A starting daemon binds its socket in its own time: nothing to block on.
            time.sleep(interval)

    # --- deployments and shapes -------------------------------------------------------

    def deployment_refs(self) -> list[tuple[str, str]]:
        """(project, name) of every deployment, in every project."""
        urls = self.client.get("/1.0/deployments", params={"all-projects": "true"}).metadata
        refs = []
        for url in urls or []:
            parsed = urlparse(url)
            project = parse_qs(parsed.query).get("project", ["default"])[0]
            refs.append((project, parsed.path.rstrip("/").rsplit("/", 1)[-1]))
        return sorted(refs)

    def list_deployments(self, project: str | None = None) -> list[dict[str, Any]]:
        """Deployment objects of one project, or of all (each with its `project`)."""
        if project is not None:
            items = self._in(project).get("/1.0/deployments", params={"recursion": 1})
            return [{**d, "project": project} for d in items.metadata or []]
        return [self.get_deployment(p, n) for p, n in self.deployment_refs()]

    def get_deployment(self, project: str, name: str) -> dict[str, Any]:
        data = self._in(project).get(_path("deployments", name)).metadata
        return {**data, "project": project}

    def find_deployment(self, project: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get_deployment(project, name)
        except APIError as err:
            if err.status_code == 404:
                return None
            raise

    def create_deployment(self, project: str, body: Mapping[str, Any]) -> None:
        self._in(project).post("/1.0/deployments", json=dict(body))

    def put_deployment(self, project: str, name: str, body: Mapping[str, Any]) -> None:
        self._in(project).put(_path("deployments", name), json=dict(body))

    def patch_deployment(self, project: str, name: str, body: Mapping[str, Any]) -> None:
        self._in(project).patch(_path("deployments", name), json=dict(body))

    def delete_deployment(self, project: str, name: str, *, force: bool = False) -> None:
        """Unless forced, a deployment whose shapes have instances is refused (409);
        forced (the force-delete-deployment action only), its instances go first."""
        params = {"force": "true"} if force else None
        self._in(project).delete(_path("deployments", name), params=params)

    def create_shape(self, project: str, deployment: str, body: Mapping[str, Any]) -> None:
        self._in(project).post(_path("deployments", deployment, "shapes"), json=dict(body))

    def put_shape(self, project: str, deployment: str, shape: str,
                  body: Mapping[str, Any]) -> None:
        self._in(project).put(_path("deployments", deployment, "shapes", shape),
                              json=dict(body))

    def delete_shape(self, project: str, deployment: str, shape: str, *,
                     force: bool = False) -> None:
        """Unless forced, a shape with instances is refused (409); forced (the
        force-delete-shape action only), its instances go first."""
        params = {"force": "true"} if force else None
        self._in(project).delete(_path("deployments", deployment, "shapes", shape),
                                 params=params)

    def get_shape(self, project: str, deployment: str, shape: str) -> dict[str, Any]:
        return self._in(project).get(_path("deployments", deployment, "shapes", shape)).metadata

    # --- keys and the trust store -------------------------------------------------------

    def list_keys(self, project: str, deployment: str) -> list[dict[str, Any]]:
        path = _path("deployments", deployment, "keys")
        return list(self._in(project).get(path, params={"recursion": 1}).metadata or [])

    def find_key(self, project: str, deployment: str, name: str) -> dict[str, Any] | None:
        try:
            return self._in(project).get(_path("deployments", deployment, "keys", name)).metadata
        except APIError as err:
            if err.status_code == 404:
                return None
            raise

    def create_key(self, project: str, deployment: str, name: str, *, role: str,
                   certificate: str = "", fingerprint: str = "",
                   description: str = "") -> dict[str, Any]:
        body = {"name": name, "role": role, "description": description}
        if certificate:
            body["certificate"] = certificate
        if fingerprint:
            body["certificate_fingerprint"] = fingerprint
        self._in(project).post(_path("deployments", deployment, "keys"), json=body)
        return self._in(project).get(_path("deployments", deployment, "keys", name)).metadata

    def patch_key(self, project: str, deployment: str, name: str,
                  body: Mapping[str, Any]) -> None:
        self._in(project).patch(_path("deployments", deployment, "keys", name), json=dict(body))

    def delete_key(self, project: str, deployment: str, name: str, *,
                   missing_ok: bool = False) -> bool:
        try:
            self._in(project).delete(_path("deployments", deployment, "keys", name))
        except APIError as err:
            if missing_ok and err.status_code == 404:
                return False
            raise
        return True

    def list_certificates(self) -> list[dict[str, Any]]:
        return list(self.client.get("/1.0/certificates", params={"recursion": 1}).metadata or [])

    def find_certificate(self, fingerprint: str) -> dict[str, Any] | None:
        try:
            return self.client.get(_path("certificates", fingerprint)).metadata
        except APIError as err:
            if err.status_code == 404:
                return None
            raise

    def add_certificate(self, certificate: str, *, name: str, kind: str) -> None:
        self.client.post("/1.0/certificates",
                         json={"certificate": certificate, "name": name, "type": kind})

    def remove_certificate(self, fingerprint: str, *, missing_ok: bool = False) -> bool:
        try:
            self.client.delete(_path("certificates", fingerprint))
        except APIError as err:
            if missing_ok and err.status_code == 404:
                return False
            raise
        return True

    # --- instances ---------------------------------------------------------------------

    def list_instances(self, project: str, deployment: str, shape: str) -> list[dict[str, Any]]:
        path = _path("deployments", deployment, "shapes", shape, "instances")
        return list(self._in(project).get(path, params={"recursion": 1}).metadata or [])

    def scale(self, project: str, deployment: str, shape: str, count: int, *,
              best_effort: bool = False, timeout: int = OPERATION_TIMEOUT) -> ScaleResult:
        """Ask the service to bring the shape to `count` instances and wait for it.

        `PUT .../scale` owns the policy (bounds, termination policy, protection, lifecycle
        hooks): a count it refuses is its 409, raised as `APIError` before anything
        changes. Its batch operation is waited on up to `timeout` seconds; what it
        granted, launched or deleted, and its error, come back in the result.
        """
        body: dict[str, Any] = {"count": count}
        if best_effort:
            body["best_effort"] = True
        answer = self._in(project).put(_path("deployments", deployment, "shapes", shape,
                                             "scale"), json=body)
        error = ""
        final = None
        if answer.operation is not None:
            try:
                final = self.client.wait_operation(answer.operation, timeout=timeout)
                if not final.done:
                    error = f"Scaling shape {shape!r} not finished after {timeout}s"
            except OperationFailed as err:
                final, error = err.operation, err.message
        metadata = dict(final.metadata if final is not None
                        else (answer.metadata or {}).get("metadata") or {})
        counts = metadata.get("scaling_count") or {}
        action = str(metadata.get("action", ""))
        results = metadata.get("results") or {}
        changes = []
        for name in metadata.get("instances") or []:
            result = results.get(name)
            if result is None:
                changes.append(InstanceChange(name, action, "failed", "not finished"))
            elif result.get("status") == "Success":
                changes.append(InstanceChange(name, action, "done"))
            else:
                changes.append(InstanceChange(name, action, "failed",
                                              str(result.get("err") or result.get("status"))))
        after = int(self.get_shape(project, deployment, shape).get("scaling_current", 0))
        return ScaleResult(deployment, shape, before=int(counts.get("previous", after)),
                           after=after, requested=count,
                           granted=int(counts.get("granted", after)),
                           changes=tuple(changes), error=error)

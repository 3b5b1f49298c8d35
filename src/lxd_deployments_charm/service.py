"""The service as the charm sees it: typed calls over its REST API (DeploymentsClient).

Nothing here knows about Juju. Every failure comes out as the client's `ClientError`
family (`APIError` with the service's own message, `ServiceUnreachable`), which the
charm turns into an action failure or a status.
"""

from __future__ import annotations

import secrets
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
# Seconds an instance launch or delete may take before the `scale` action gives up on it.
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
    changes: tuple[InstanceChange, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[InstanceChange, ...]:
        return tuple(c for c in self.changes if c.status != "done")


class ScaleRefused(ClientError):
    """The requested count is outside the shape's bounds; nothing was changed."""


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

    def scale(self, project: str, deployment: str, shape: str, count: int,
              *, timeout: int = OPERATION_TIMEOUT) -> ScaleResult:
        """Launch or delete instances until the shape has `count` (within its bounds).

        The service holds the bounds under any concurrency; this checks them first only
        to refuse a request that cannot succeed before touching anything.
        """
        details = self.get_shape(project, deployment, shape)
        low, high = details["scaling_minimum"], details["scaling_maximum"]
        if not low <= count <= high:
            raise ScaleRefused(f'{count} is outside the bounds of shape "{shape}" '
                               f"(scaling_minimum {low}, scaling_maximum {high})")
        instances = self.list_instances(project, deployment, shape)
        # The service's count includes records still being created (not yet in LXD).
        before = int(details.get("scaling_current", len(instances)))
        client = self._in(project)
        base = _path("deployments", deployment, "shapes", shape, "instances")
        started: list[tuple[str, str, str | None, str]] = []  # name, action, op, error
        if count > before:
            taken = {i.get("name") for i in instances}
            for name in _new_names(shape, taken, count - before):
                try:
                    answer = client.post(base, json={"instance_name": name})
                    started.append((name, "launch", answer.operation, ""))
                except APIError as err:
                    started.append((name, "launch", None, err.message))
        elif count < before:
            for instance in _deletion_order(instances)[: before - count]:
                name = instance["name"]
                try:
                    answer = client.delete(f"{base}/{quote(name, safe='')}")
                    started.append((name, "delete", answer.operation, ""))
                except APIError as err:
                    started.append((name, "delete", None, err.message))
        changes = []
        for name, action, operation, error in started:
            if operation is not None:
                try:
                    final = self.client.wait_operation(operation, timeout=timeout)
                    if not final.done:
                        error = f"not finished after {timeout}s"
                except OperationFailed as err:
                    error = err.message
            changes.append(InstanceChange(name, action, "failed" if error else "done", error))
        after = int(self.get_shape(project, deployment, shape).get("scaling_current", 0))
        return ScaleResult(deployment, shape, before, after, tuple(changes))


def _new_names(shape: str, taken: set[Any], count: int) -> list[str]:
    """Instance names `<shape>-<6 hex>`, cut so they stay valid LXD names (<= 63)."""
    names: list[str] = []
    prefix = shape[:55].rstrip("-")
    while len(names) < count:
        name = f"{prefix}-{secrets.token_hex(3)}"
        if name not in taken and name not in names:
            names.append(name)
    return names


def _deletion_order(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Broken instances go first, then the newest: the oldest healthy ones stay."""
    def rank(instance: dict[str, Any]) -> tuple[int, str]:
        healthy = 0 if str(instance.get("status", "")).lower() == "running" else -1
        return (healthy, _inverted(str(instance.get("created_at", ""))))
    return sorted(instances, key=rank)


def _inverted(text: str) -> str:
    """A sort key that orders strings backwards (newest timestamp first)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)

"""An in-memory LXD with the adapter's methods: the only fake the unit tests use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxd_deployments.errors import Conflict, LXDUnavailable
from lxd_deployments.lxd import Profile


@dataclass
class FakeLXD:
    projects: set[str] = field(default_factory=lambda: {"default"})
    images: dict[str, set[str]] = field(default_factory=lambda: {"default": {"busybox"}})
    fingerprints: dict[str, set[str]] = field(default_factory=lambda: {"default": {"a" * 64}})
    profiles: dict[tuple[str, str], Profile] = field(default_factory=dict)
    deleted_instances: list[tuple[str, str]] = field(default_factory=list)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail_create: set[str] = field(default_factory=set)
    fail_start: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.profiles.setdefault(("default", "default"), Profile(
            name="default", devices={"root": {"path": "/", "pool": "default", "type": "disk"}}))

    def project_exists(self, project: str) -> bool:
        return project in self.projects

    def image_exists(self, project: str, *, alias: str | None = None,
                     fingerprint: str | None = None) -> bool:
        if alias:
            return alias in self.images.get(project, set())
        if fingerprint:
            return any(f.startswith(fingerprint) for f in self.fingerprints.get(project, set()))
        return False

    def get_profile(self, project: str, name: str) -> Profile | None:
        return self.profiles.get((project, name))

    def add_instance(self, project: str, name: str, config: dict[str, str] | None = None,
                     status: str = "Running") -> dict[str, Any]:
        """Put an instance in the fake LXD, as if someone had created it there."""
        instance = {"name": name, "project": project, "status": status,
                    "config": dict(config or {}), "state": {"status": status}}
        self.instances[(project, name)] = instance
        return instance

    def instance_exists(self, project: str, name: str) -> bool:
        return (project, name) in self.instances

    def get_instance(self, project: str, name: str) -> dict[str, Any] | None:
        return self.instances.get((project, name))

    def list_instances(self, project: str, *, with_state: bool = False) -> list[dict[str, Any]]:
        return [i for (p, _), i in self.instances.items() if p == project]

    def create_instance(self, project: str, body: dict[str, Any]) -> None:
        name = body["name"]
        if name in self.fail_create:
            raise LXDUnavailable(f"LXD refused the request: cannot create {name}")
        if (project, name) in self.instances:
            raise Conflict(f'Instance "{name}" already exists in LXD')
        self.add_instance(project, name, body.get("config"), status="Stopped")

    def change_state(self, project: str, name: str, action: str, *, force: bool = False,
                     timeout: int = -1) -> None:
        if action == "start" and name in self.fail_start:
            raise LXDUnavailable(f"LXD operation failed: cannot start {name}")
        instance = self.instances[(project, name)]
        status = {"start": "Running", "restart": "Running", "stop": "Stopped",
                  "freeze": "Frozen", "unfreeze": "Running"}[action]
        instance["status"] = instance["state"]["status"] = status

    def delete_instance(self, project: str, name: str) -> None:
        self.instances.pop((project, name), None)
        self.deleted_instances.append((project, name))

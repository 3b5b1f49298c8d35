"""An in-memory LXD with the adapter's methods: the only fake the unit tests use."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lxd_deployments.errors import Conflict, LXDUnavailable
from lxd_deployments.lxd import EventHandler, LifecycleEvent, Profile

_STATE_EVENTS = {"start": "instance-started", "restart": "instance-restarted",
                 "freeze": "instance-paused", "unfreeze": "instance-resumed"}


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
    waited_for_operations: list[str] = field(default_factory=list)
    # Lifecycle events, as LXD's events websocket would send them (see `watch_events`).
    events: queue.Queue = field(default_factory=queue.Queue)
    connections: int = 0
    listing_calls: int = 0
    # What `/1.0/resources` says of the host (tests change it to make pressure).
    resources: dict[str, Any] = field(default_factory=lambda: {
        "cpu": {"total": 4}, "memory": {"total": 8 * 2**30, "used": 2 * 2**30}})

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
        self.listing_calls += 1
        return [i for (p, _), i in self.instances.items() if p == project]

    def create_instance(self, project: str, body: dict[str, Any]) -> None:
        name = body["name"]
        if name in self.fail_create:
            raise LXDUnavailable(f"LXD refused the request: cannot create {name}")
        if (project, name) in self.instances:
            raise Conflict(f'Instance "{name}" already exists in LXD')
        self.add_instance(project, name, body.get("config"), status="Stopped")
        self.emit(project, "instance-created", name)

    def change_state(self, project: str, name: str, action: str, *, force: bool = False,
                     timeout: int = -1) -> None:
        if action == "start" and name in self.fail_start:
            raise LXDUnavailable(f"LXD operation failed: cannot start {name}")
        instance = self.instances[(project, name)]
        status = {"start": "Running", "restart": "Running", "stop": "Stopped",
                  "freeze": "Frozen", "unfreeze": "Running"}[action]
        instance["status"] = instance["state"]["status"] = status
        if action == "stop":
            self.emit(project, "instance-stopped" if force else "instance-shutdown", name)
        else:
            self.emit(project, _STATE_EVENTS[action], name)

    def delete_instance(self, project: str, name: str) -> None:
        instance = self.instances.pop((project, name), None)
        self.deleted_instances.append((project, name))
        if instance is not None:
            if instance["status"] != "Stopped":
                self.emit(project, "instance-stopped", name)
            self.emit(project, "instance-deleted", name)

    def wait_for_instance_operations(self, project: str, timeout: float) -> int:
        self.waited_for_operations.append(project)
        return 0

    def get_resources(self) -> dict[str, Any]:
        return self.resources

    # --- what `lxc` does behind the service's back (the adapter has no such method) ------

    def rename_instance(self, project: str, name: str, new_name: str) -> None:
        instance = self.instances.pop((project, name))
        instance["name"] = new_name
        self.instances[(project, new_name)] = instance
        self.emit(project, "instance-renamed", new_name, {"old_name": name})

    # --- events --------------------------------------------------------------------------

    def emit(self, project: str, action: str, name: str,
             context: dict[str, Any] | None = None) -> None:
        """Queue a lifecycle event for the listener (kept until one listens)."""
        self.events.put(LifecycleEvent(project=project, action=action, name=name,
                                       context=dict(context or {})))

    def watch_events(self, handler: EventHandler, stop: threading.Event, *,
                     on_connect: Callable[[], None] | None = None,
                     projects: Iterable[str] | None = None) -> None:
        wanted = None if projects is None else set(projects)
        self.connections += 1
        if on_connect is not None:
            on_connect()
        while not stop.is_set():
            try:
                event = self.events.get(timeout=0.02)
            except queue.Empty:
                continue
            try:
                if wanted is None or event.project in wanted:
                    handler(event)
            finally:
                self.events.task_done()

    def drain(self) -> None:
        """Wait until the listener has taken every queued event."""
        self.events.join()

"""An in-memory LXD with the adapter's methods: the only fake the unit tests use."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lxd_deployments.errors import Conflict, LXDUnavailable, NotFound
from lxd_deployments.lxd import ClusterMember, EventHandler, LifecycleEvent, Profile

_STATE_EVENTS = {"start": "instance-started", "restart": "instance-restarted",
                 "freeze": "instance-paused", "unfreeze": "instance-resumed"}


@dataclass
class FakeLXD:
    projects: set[str] = field(default_factory=lambda: {"default"})
    images: dict[str, set[str]] = field(default_factory=lambda: {"default": {"busybox"}})
    fingerprints: dict[str, set[str]] = field(default_factory=lambda: {"default": {"a" * 64}})
    profiles: dict[tuple[str, str], Profile] = field(default_factory=dict)
    # (project, alias or fingerprint) -> image type; absent: a container image.
    image_types: dict[tuple[str, str], str] = field(default_factory=dict)
    deleted_instances: list[tuple[str, str]] = field(default_factory=list)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail_create: set[str] = field(default_factory=set)
    # A clustered LXD: its members (None: not clustered), and each create's `target`.
    cluster: list[ClusterMember] | None = None
    # Cluster groups without members (those of `cluster` members exist too).
    empty_groups: set[str] = field(default_factory=set)
    create_targets: dict[str, str | None] = field(default_factory=dict)
    # While set to an unset Event, creates wait on it (tests hold launches in flight):
    # those of the names in `held`, or all when `held` is None. `creating` and
    # `most_creating` count the creates in flight, now and at most.
    create_gate: threading.Event | None = None
    held: set[str] | None = None
    creating: int = 0
    most_creating: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    fail_start: set[str] = field(default_factory=set)
    waited_for_operations: list[str] = field(default_factory=list)
    # Lifecycle events, as LXD's events websocket would send them (see `watch_events`).
    events: queue.Queue = field(default_factory=queue.Queue)
    connections: int = 0
    listing_calls: int = 0
    # What `/1.0/resources` says of the host (tests change it to make pressure).
    resources: dict[str, Any] = field(default_factory=lambda: {
        "cpu": {"total": 4}, "memory": {"total": 8 * 2**30, "used": 2 * 2**30}})

    # `/1.0/resources?target=` per cluster member (absent: `resources`).
    member_resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.profiles.setdefault(("default", "default"), Profile(
            name="default", devices={"root": {"path": "/", "pool": "default", "type": "disk"}}))

    def project_exists(self, project: str) -> bool:
        return project in self.projects

    def image_type(self, project: str, *, alias: str | None = None,
                   fingerprint: str | None = None) -> str | None:
        if alias:
            found = alias in self.images.get(project, set())
        elif fingerprint:
            found = any(f.startswith(fingerprint) for f in self.fingerprints.get(project, set()))
        else:
            found = False
        if not found:
            return None
        return self.image_types.get((project, alias or fingerprint or ""), "container")

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
        # As LXD: recursion=1 objects carry no `state`, recursion=2 ones do.
        return [i if with_state else {k: v for k, v in i.items() if k != "state"}
                for (p, _), i in self.instances.items() if p == project]

    def instance_names(self, project: str) -> set[str]:
        return {name for (p, name) in self.instances if p == project}

    def create_instance(self, project: str, body: dict[str, Any], *,
                        target: str | None = None) -> None:
        name = body["name"]
        with self._lock:
            self.creating += 1
            self.most_creating = max(self.most_creating, self.creating)
        try:
            if self.create_gate is not None and (self.held is None or name in self.held):
                self.create_gate.wait(30)
            if name in self.fail_create:
                raise LXDUnavailable(f"LXD refused the request: cannot create {name}")
            with self._lock:
                if (project, name) in self.instances:
                    raise Conflict(f'Instance "{name}" already exists in LXD')
                self.create_targets[name] = target
                instance = self.add_instance(project, name, body.get("config"),
                                             status="Stopped")
            instance["location"] = target or ("none" if self.cluster is None
                                              else self.cluster[0].name)
            self.emit(project, "instance-created", name)
        finally:
            with self._lock:
                self.creating -= 1

    def cluster_members(self) -> list[ClusterMember] | None:
        return None if self.cluster is None else list(self.cluster)

    def cluster_groups(self) -> set[str] | None:
        if self.cluster is None:
            return None
        return {"default"} | {g for m in self.cluster for g in m.groups} | self.empty_groups

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

    def get_resources(self, target: str | None = None) -> dict[str, Any]:
        return self.member_resources.get(target, self.resources) if target else self.resources

    def add_instance_device(self, project: str, name: str, device_name: str,
                            device: dict[str, str], config: dict[str, str] | None = None
                            ) -> None:
        instance = self.instances.get((project, name))
        if instance is None:
            raise NotFound(f'Instance "{name}" not found in project "{project}"')
        devices = instance.setdefault("devices", {})
        if device_name in devices:
            raise Conflict(f'Instance "{name}" already has a device "{device_name}"')
        devices[device_name] = dict(device)
        instance["config"].update(config or {})

    def remove_instance_device(self, project: str, name: str, device_name: str,
                               config_keys: Iterable[str] = ()) -> None:
        instance = self.instances.get((project, name))
        if instance is None:
            raise NotFound(f'Instance "{name}" not found in project "{project}"')
        if instance.get("devices", {}).pop(device_name, None) is None:
            raise NotFound(f'Instance "{name}" has no device "{device_name}"')
        for key in config_keys:
            instance["config"].pop(key, None)

    def update_instance_config(self, project: str, name: str, config: dict[str, str],
                               remove: Iterable[str] = ()) -> None:
        instance = self.instances.get((project, name))
        if instance is None:
            raise NotFound(f'Instance "{name}" not found in project "{project}"')
        for key in remove:
            instance["config"].pop(key, None)
        instance["config"].update(config)

    def push_file(self, project: str, name: str, path: str, content: bytes, *,
                  mode: int = 0o600) -> None:
        instance = self.instances.get((project, name))
        if instance is None:
            raise NotFound(f'Instance "{name}" not found in project "{project}"')
        instance.setdefault("files", {})[path] = (content, mode)

    def rename_instance(self, project: str, name: str, new_name: str) -> None:
        if (project, name) not in self.instances:
            raise NotFound(f'Instance "{name}" not found in project "{project}"')
        if (project, new_name) in self.instances:
            raise Conflict(f'Instance "{new_name}" already exists in LXD')
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

"""What the core needs from LXD, as a protocol: unit tests swap in a fake with these methods."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Profile:
    """The parts of an LXD profile a shape template can copy."""

    name: str
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class LifecycleEvent:
    """An LXD lifecycle event about an instance (`instance-deleted`, `instance-renamed`
    with `context["old_name"]`, `instance-stopped`, `instance-shutdown`, ...)."""

    project: str
    action: str
    name: str
    context: dict[str, Any] = field(default_factory=dict)


EventHandler = Callable[[LifecycleEvent], None]


@dataclass(frozen=True)
class ClusterMember:
    """A member of a clustered LXD, as placement needs it."""

    name: str
    status: str = "Online"
    groups: tuple[str, ...] = ()

    @property
    def online(self) -> bool:
        return self.status == "Online"


class LXDAdapter(Protocol):
    """Questions and commands for LXD. Every method may raise `LXDUnavailable`."""

    def project_exists(self, project: str) -> bool:
        """Whether the LXD project exists."""
        ...

    def image_type(self, project: str, *, alias: str | None = None,
                   fingerprint: str | None = None) -> str | None:
        """The type (`container` or `virtual-machine`) of the image with this alias, or
        fingerprint (or prefix), in the project; None when there is none."""
        ...

    def get_profile(self, project: str, name: str) -> Profile | None:
        """The profile, or None when the project has no profile of that name."""
        ...

    def instance_exists(self, project: str, name: str) -> bool:
        """Whether LXD has an instance of that name in the project (ours or not)."""
        ...

    def get_instance(self, project: str, name: str) -> dict[str, Any] | None:
        """The LXD instance object with its `state`, or None when there is none."""
        ...

    def list_instances(self, project: str, *, with_state: bool = False) -> list[dict[str, Any]]:
        """Every instance of the project as LXD objects (`state` included on request)."""
        ...

    def instance_names(self, project: str) -> set[str]:
        """The names of every instance of the project (ours or not), in one call."""
        ...

    def create_instance(self, project: str, body: dict[str, Any], *,
                        target: str | None = None) -> None:
        """Create an instance from an LXD InstancesPost body and wait for it; `target`
        names the cluster member to create it on (LXD's `?target=`).

        Raises `Conflict` when the name is taken, `LXDUnavailable` on other failures.
        """
        ...

    def cluster_members(self) -> list[ClusterMember] | None:
        """The members of LXD's cluster, or None when LXD is not clustered (the answer
        may be a few seconds old)."""
        ...

    def cluster_groups(self) -> set[str] | None:
        """The names of LXD's cluster groups, or None when LXD is not clustered."""
        ...

    def change_state(self, project: str, name: str, action: str, *, force: bool = False,
                     timeout: int = -1) -> None:
        """Start, stop, restart, freeze or unfreeze an instance and wait for it."""
        ...

    def delete_instance(self, project: str, name: str) -> None:
        """Stop (forcibly) and delete an instance; an instance already gone is not an error."""
        ...

    def wait_for_instance_operations(self, project: str, timeout: float) -> int:
        """Wait (up to `timeout` s each) for LXD's running operations on instances of the
        project to end; returns how many there were. Recovery calls it so that a create
        cut off by our crash has finished, one way or the other, before records are settled.
        """
        ...

    def get_resources(self, target: str | None = None) -> dict[str, Any]:
        """LXD's `/1.0/resources`: the host's CPU and memory (of the member answering, or
        of cluster member `target`)."""
        ...

    def watch_events(self, handler: EventHandler, stop: threading.Event, *,
                     on_connect: Callable[[], None] | None = None,
                     projects: Iterable[str] | None = None) -> None:
        """Listen to LXD's instance lifecycle events until `stop` is set (blocking).

        `handler` gets each event; `projects` None means every project. The method
        reconnects by itself and calls `on_connect` after every (re)connection, since
        events may have been missed while it was away.
        """
        ...

    def add_instance_device(self, project: str, name: str, device_name: str,
                            device: dict[str, str], config: dict[str, str] | None = None
                            ) -> None:
        """Add a device to an instance (and `config` keys to its config) in one change.

        Raises `NotFound` when there is no such instance, `Conflict` when it already has
        a device of that name, `InvalidInput` when LXD refuses the device."""
        ...

    def push_file(self, project: str, name: str, path: str, content: bytes, *,
                  mode: int = 0o600) -> None:
        """Write a file (owned by root, `mode`) into an instance, stopped or running,
        replacing what is there. Raises `NotFound` when there is no such instance."""
        ...

    def rename_instance(self, project: str, name: str, new_name: str) -> None:
        """Rename a (stopped) instance; `Conflict` when the new name is taken, `NotFound`
        when there is no such instance."""
        ...

    def update_instance_config(self, project: str, name: str, config: dict[str, str],
                               remove: Iterable[str] = ()) -> None:
        """Set `config` keys on an instance and drop `remove` ones, in one change."""
        ...

    def remove_instance_device(self, project: str, name: str, device_name: str,
                               config_keys: Iterable[str] = ()) -> None:
        """Remove a device from an instance (and `config_keys` from its config) in one
        change. Raises `NotFound` when there is no such instance or device."""
        ...

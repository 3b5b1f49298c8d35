"""An in-memory LXD with the adapter's methods: the only fake the unit tests use."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxd_deployments.lxd import Profile


@dataclass
class FakeLXD:
    projects: set[str] = field(default_factory=lambda: {"default"})
    images: dict[str, set[str]] = field(default_factory=lambda: {"default": {"busybox"}})
    fingerprints: dict[str, set[str]] = field(default_factory=lambda: {"default": {"a" * 64}})
    profiles: dict[tuple[str, str], Profile] = field(default_factory=dict)
    deleted_instances: list[tuple[str, str]] = field(default_factory=list)

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

    def delete_instance(self, project: str, name: str) -> None:
        self.deleted_instances.append((project, name))

"""Install the service's code from the charm, and remove it.

The charm carries the service (`src/lxd_deployments`) and its dependencies (the charm's
virtualenv). Installing copies both into `/opt/lxd-deployments/releases/<digest>/` and
points `current` at it, so the running service never sees the charm's files change
under it during `upgrade-charm`: it moves to the new release only when restarted. The
digest covers the service's source and the dependencies' versions, so an unchanged
charm installs nothing and restarts nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import CharmError

# The service's package, and what it imports at run time besides the standard library.
SERVICE_PACKAGE = "lxd_deployments"
SERVICE_DEPENDENCIES = ("fastapi", "uvicorn", "sqlalchemy", "pylxd", "pydantic", "yaml",
                        "httpx", "cryptography", "jwt", "prometheus_client")
# Never copied: byte-code caches (anywhere), and the charm's own packages (top level).
_CACHES = shutil.ignore_patterns("__pycache__", "*.pyc")
_CHARM_ONLY = ("ops", "ops-", "ops_", "scenario", "jinja2", "Jinja2", "markupsafe",
               "MarkupSafe", "lxd_deployments_charm", "charms", "charm.py")


class InstallError(CharmError):
    """The service's code cannot be found in the charm or copied."""


@dataclass(frozen=True)
class Sources:
    """Where the service's code and its dependencies are in the charm."""

    package: Path
    dependencies: tuple[Path, ...]
    python: str


def find_sources() -> Sources:
    """Locate the service package and its dependencies' directories (sys.path entries)."""
    package = _package_dir(SERVICE_PACKAGE)
    dependencies: list[Path] = []
    for name in SERVICE_DEPENDENCIES:
        site = _package_dir(name).parent
        if site not in dependencies:
            dependencies.append(site)
    # The interpreter the charm runs on is the one the dependencies were built for.
    return Sources(package, tuple(dependencies), os.path.realpath(sys.executable))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise InstallError(f"the charm does not carry the Python package {name!r}")
    return Path(spec.origin).resolve().parent


def release_digest(sources: Sources) -> str:
    """A digest of the service's source files and the dependency directories' listing."""
    digest = hashlib.sha256()
    for path in sorted(_files(sources.package)):
        digest.update(str(path.relative_to(sources.package)).encode())
        digest.update(path.read_bytes())
    for site in sources.dependencies:
        # dist-info directory names carry each distribution's name and version.
        for entry in sorted(p.name for p in site.iterdir()):
            digest.update(entry.encode())
    return digest.hexdigest()[:16]


def _files(root: Path) -> Iterable[Path]:
    for path in root.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


def ensure_installed(sources: Sources, install_dir: Path) -> bool:
    """Make `install_dir/current` the release of `sources`; True if it changed."""
    release = install_dir / "releases" / release_digest(sources)
    current = install_dir / "current"
    if current.is_symlink() and current.resolve() == release.resolve() and release.is_dir():
        return False
    staging = release.with_name(release.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for site in sources.dependencies:
            for entry in site.iterdir():
                target = staging / entry.name
                if (entry.name == SERVICE_PACKAGE or target.exists()
                        or entry.name.startswith(_CHARM_ONLY) or entry.name == "__pycache__"):
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, target, ignore=_CACHES, symlinks=True)
                else:
                    shutil.copy2(entry, target)
        shutil.copytree(sources.package, staging / SERVICE_PACKAGE, ignore=_CACHES)
        shutil.rmtree(release, ignore_errors=True)
        staging.rename(release)
        link = install_dir / ".current.new"
        link.unlink(missing_ok=True)
        link.symlink_to(release.relative_to(install_dir))
        os.replace(link, current)
    except OSError as err:
        raise InstallError(f"cannot install the service in {install_dir}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def prune_releases(install_dir: Path) -> list[Path]:
    """Delete every release but `current`: call it once the service runs the new one,
    so that a release that does not start can still be gone back to."""
    releases = install_dir / "releases"
    current = (install_dir / "current").resolve()
    removed = []
    for old in sorted(releases.iterdir()) if releases.is_dir() else []:
        if old.resolve() != current and not old.name.endswith(".partial"):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def is_installed(install_dir: Path) -> bool:
    return (install_dir / "current" / SERVICE_PACKAGE).is_dir()


def remove_paths(paths: Iterable[Path]) -> list[Path]:
    """Delete these files and directories; the ones that existed."""
    removed = []
    for path in paths:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(path)
    return removed

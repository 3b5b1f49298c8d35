"""The charm's workload modules on their own: install, files, options, LXD access."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lxd_deployments_charm import install, lxd_access
from lxd_deployments_charm.errors import BlockedError, WaitingError
from lxd_deployments_charm.options import ShapeSpec, parse_deployments
from lxd_deployments_charm.paths import Paths
from lxd_deployments_charm.render import ensure_file


def _sources(root: Path) -> install.Sources:
    package = root / "src" / "lxd_deployments"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_text("")
    site = root / "venv"
    for name in ("fastapi", "ops", "jinja2", "pydantic"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
    (site / "pydantic" / "ops").mkdir()  # nested: not the charm's `ops`
    return install.Sources(package, (site,), sys.executable)


def test_install_copies_the_service_and_its_dependencies_only(tmp_path):
    sources = _sources(tmp_path)

    changed = install.ensure_installed(sources, tmp_path / "opt")

    current = tmp_path / "opt" / "current"
    assert changed and install.is_installed(tmp_path / "opt")
    assert sorted(p.name for p in current.iterdir()) == ["fastapi", "lxd_deployments",
                                                         "pydantic"]
    assert (current / "pydantic" / "ops").is_dir()
    assert not (current / "lxd_deployments" / "__pycache__").exists()


def test_install_is_idempotent_and_follows_changes(tmp_path):
    sources = _sources(tmp_path)
    install.ensure_installed(sources, tmp_path / "opt")

    unchanged = install.ensure_installed(sources, tmp_path / "opt")
    (sources.package / "new.py").write_text("")
    changed = install.ensure_installed(sources, tmp_path / "opt")

    assert not unchanged and changed
    # The old release stays until the new one runs (the charm prunes only then).
    assert len(list((tmp_path / "opt" / "releases").iterdir())) == 2
    assert (tmp_path / "opt" / "current" / "lxd_deployments" / "new.py").exists()
    removed = install.prune_releases(tmp_path / "opt")
    assert len(removed) == 1
    assert list((tmp_path / "opt" / "releases").iterdir()) == [
        (tmp_path / "opt" / "current").resolve()]


def test_find_sources_finds_the_service_package():
    sources = install.find_sources()

    assert (sources.package / "daemon.py").exists()
    assert any((site / "fastapi").is_dir() for site in sources.dependencies)


def test_ensure_file_writes_only_changes_and_sets_the_mode_from_the_start(tmp_path):
    path = tmp_path / "etc" / "secret.key"

    first = ensure_file(path, "key", mode=0o600)
    again = ensure_file(path, "key", mode=0o600)
    path.chmod(0o644)
    mode_fixed = ensure_file(path, "key", mode=0o600)

    assert (first, again, mode_fixed) == (True, False, True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]


def test_remove_paths_reports_what_existed(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")

    removed = install.remove_paths([tmp_path / "dir", tmp_path / "file", tmp_path / "none"])

    assert removed == [tmp_path / "dir", tmp_path / "file"]


def test_shape_templates_from_the_short_form():
    assert ShapeSpec(image="busybox", max=1).template() == {
        "type": "container", "source": {"type": "image", "alias": "busybox"}}
    assert ShapeSpec(profiles=["web"], vm=True, max=1).template() == {
        "type": "virtual-machine", "source": {"type": "none"}, "profiles": ["web"]}


def test_a_template_and_a_short_form_together_are_refused():
    with pytest.raises(BlockedError, match="give either instance_template or image"):
        parse_deployments("web: {shapes: {f: {image: a, instance_template: {}, max: 1}}}")


def test_the_managed_marker_cannot_be_set_by_hand():
    with pytest.raises(BlockedError, match=r"user\.juju\.managed-by is set by the charm"):
        parse_deployments("web: {config: {user.juju.managed-by: me}}")


def test_an_empty_option_declares_nothing():
    assert parse_deployments("").deployments == {}
    assert parse_deployments("# nothing\n").deployments == {}


def test_the_client_pair_is_made_once_with_a_private_key_file(tmp_path):
    paths = Paths(tmp_path)

    first = lxd_access.ensure_client_pair(paths, "juju-unit-0")
    second = lxd_access.ensure_client_pair(paths, "juju-unit-0")

    assert first.certificate == second.certificate
    assert first.private_key == "" and "PRIVATE KEY" in paths.lxd_client_key.read_text()
    assert paths.lxd_client_key.stat().st_mode & 0o777 == 0o600


def test_remote_lxd_prefers_a_complete_bag():
    remote = lxd_access.parse_remote([{}, {"version": "1.0", "certificate": "pem",
                                           "addresses": " 10.0.0.1:8443 , 10.0.0.2:8443"}])

    assert remote.addresses == ("10.0.0.1:8443", "10.0.0.2:8443")
    assert remote.url == "https://10.0.0.1:8443"


def test_remote_lxd_without_data_is_waited_for():
    with pytest.raises(WaitingError):
        lxd_access.parse_remote([{}, {"version": "1.0"}])


def test_the_local_socket_follows_lxd_dir(tmp_path, monkeypatch):
    import socket

    path = tmp_path / "unix.socket"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("LXD_DIR", str(tmp_path))

        assert lxd_access.local_socket(()) == path
    monkeypatch.delenv("LXD_DIR")
    assert lxd_access.local_socket((tmp_path / "none",)) is None

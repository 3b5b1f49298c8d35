"""LXD-style object URLs: `?project=` appended only outside the default project."""

from __future__ import annotations

from urllib.parse import quote

# LXD's project when a request names none (URLs carry `?project=` only for the others).
DEFAULT_PROJECT = "default"


def _with_project(path: str, project: str) -> str:
    return path if project == DEFAULT_PROJECT else f"{path}?project={quote(project)}"


def deployment_url(project: str, deployment: str) -> str:
    return _with_project(f"/1.0/deployments/{deployment}", project)


def shape_url(project: str, deployment: str, shape: str) -> str:
    return _with_project(f"/1.0/deployments/{deployment}/shapes/{shape}", project)


def placement_group_url(project: str, deployment: str, group: str) -> str:
    return _with_project(f"/1.0/deployments/{deployment}/placement-groups/{group}", project)


def key_url(project: str, deployment: str, key: str) -> str:
    return _with_project(f"/1.0/deployments/{deployment}/keys/{key}", project)


def instance_url(project: str, instance: str) -> str:
    """The instance's URL in LXD's own API, so a governor can follow it there."""
    return _with_project(f"/1.0/instances/{instance}", project)


def certificate_url(fingerprint: str) -> str:
    return f"/1.0/certificates/{fingerprint}"


def shape_instance_url(project: str, deployment: str, shape: str, instance: str) -> str:
    """The instance's URL in this API, under its shape."""
    return _with_project(f"/1.0/deployments/{deployment}/shapes/{shape}/instances/{instance}",
                         project)


def governor_socket_url(project: str, deployment: str, instance: str) -> str:
    return _with_project(f"/1.0/deployments/{deployment}/governor-sockets/{instance}",
                         project)


def operation_url(operation_id: str, project: str) -> str:
    """An operation's URL; outside the default project it names the project, as LXD's do."""
    return _with_project(f"/1.0/operations/{operation_id}", project)

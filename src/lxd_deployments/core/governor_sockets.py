"""Governor sockets: the service's in-instance socket, exposed inside a governor's
container by an LXD proxy device, so a governor running there reaches the API without
a network (with a JWT: the socket takes bearer tokens only, and never makes an admin).

The device is named `lxd-deployments`:

    type: proxy
    bind: instance                                  # the socket is made inside the instance
    listen: unix:/dev/lxd-deployments.sock          # `path`, the default
    connect: unix:<the service's instance_socket>   # on the host
    uid: "0", gid: "0", mode: "0660"                # of the socket inside the instance

and the instance gets `user.lxd-deployments.governor-socket: <deployment>`, which is how
a deployment lists its sockets: LXD holds the whole state, the store none. This is the
one change the service makes to an instance it did not create, and only when an admin
asks for it; removing the socket removes exactly the device and that key.

The socket itself opens no deployment: whoever uses it still needs a token signed by a
key of the deployment it addresses. Containers only (LXD cannot bind a unix socket inside
a virtual machine).
"""

from __future__ import annotations

import re
from typing import Any

from ..client import DEFAULT_INSTANCE_SOCKET
from ..errors import Conflict, InvalidInput, NotFound
from ..names import validate_name
from .context import Core
from .deployments import require_deployment
from .templates import INSTANCE_KEY_PREFIX
from .urls import governor_socket_url, instance_url

DEVICE_NAME = "lxd-deployments"
KEY_GOVERNOR_SOCKET = INSTANCE_KEY_PREFIX + "governor-socket"
DEFAULT_PATH = DEFAULT_INSTANCE_SOCKET
DEFAULT_MODE = "0660"
# A unix socket path may not exceed 107 bytes; room is left for LXD's own handling.
MAX_PATH_LENGTH = 100
MAX_ID = 2**32 - 2

_PATH = re.compile(r"(/[A-Za-z0-9._+@-]+)+")
_MODE = re.compile(r"0?[0-7]{3}")


def _check_path(path: str) -> str:
    if not _PATH.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise InvalidInput(f'path "{path}" must be an absolute path in the instance, of '
                           "letters, digits and . _ + @ - (no . or .. parts)")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidInput(f"path must be at most {MAX_PATH_LENGTH} characters long")
    return path


def _check_mode(mode: str) -> str:
    if not _MODE.fullmatch(mode):
        raise InvalidInput(f'mode "{mode}" must be an octal file mode such as "0660"')
    return mode.rjust(4, "0")


def _check_id(value: int, what: str) -> str:
    if not 0 <= value <= MAX_ID:
        raise InvalidInput(f"{what} must be from 0 to {MAX_ID}")
    return str(value)


def _listen_path(device: dict[str, str]) -> str:
    return str(device.get("listen", "")).removeprefix("unix:")


def _present(project: str, deployment: str, instance: dict[str, Any]) -> dict[str, Any]:
    name = instance["name"]
    device = (instance.get("devices") or {})[DEVICE_NAME]
    return {
        "instance": name,
        "deployment": deployment,
        "device": DEVICE_NAME,
        "path": _listen_path(device),
        "uid": int(device.get("uid") or 0),
        "gid": int(device.get("gid") or 0),
        "mode": device.get("mode", ""),
        "connect": str(device.get("connect", "")).removeprefix("unix:"),
        "status": instance.get("status", ""),
        "instance_url": instance_url(project, name),
    }


def _is_socket_of(instance: dict[str, Any], deployment: str) -> bool:
    return ((instance.get("config") or {}).get(KEY_GOVERNOR_SOCKET) == deployment
            and DEVICE_NAME in (instance.get("devices") or {}))


def _deployment(core: Core, project: str, deployment: str) -> None:
    core.require_project_allowed(project)
    with core.db.read() as conn:
        require_deployment(conn, project, deployment, details=False)


def list_sockets(core: Core, project: str, deployment: str) -> list[dict[str, Any]]:
    _deployment(core, project, deployment)
    found = [i for i in core.lxd.list_instances(project) if _is_socket_of(i, deployment)]
    return [_present(project, deployment, i) for i in sorted(found, key=lambda i: i["name"])]


def list_socket_urls(core: Core, project: str, deployment: str) -> list[str]:
    return [governor_socket_url(project, deployment, s["instance"])
            for s in list_sockets(core, project, deployment)]


def _instance(core: Core, project: str, name: str) -> dict[str, Any]:
    instance = core.lxd.get_instance(project, name)
    if instance is None:
        raise NotFound(f'Instance "{name}" not found')
    return instance


def get_socket(core: Core, project: str, deployment: str, name: str) -> dict[str, Any]:
    _deployment(core, project, deployment)
    instance = _instance(core, project, name)
    if not _is_socket_of(instance, deployment):
        raise NotFound(f'Instance "{name}" has no governor socket of deployment '
                       f'"{deployment}"')
    return _present(project, deployment, instance)


def add_socket(core: Core, project: str, deployment: str, name: str, *,
               path: str | None = None, uid: int = 0, gid: int = 0,
               mode: str = DEFAULT_MODE) -> dict[str, Any]:
    """Add the proxy device to the instance; return the governor socket as listed."""
    _deployment(core, project, deployment)
    validate_name(name, "Instance")
    device = {"type": "proxy", "bind": "instance",
              "listen": f"unix:{_check_path(path or DEFAULT_PATH)}",
              "connect": f"unix:{core.instance_socket}",
              "uid": _check_id(uid, "uid"), "gid": _check_id(gid, "gid"),
              "mode": _check_mode(mode)}
    if core.instance_socket is None:
        raise InvalidInput("This service serves no in-instance socket (jwt.enabled is off)")
    instance = _instance(core, project, name)
    if instance.get("type", "container") != "container":
        raise InvalidInput(f'Instance "{name}" is a {instance.get("type")}: governor sockets '
                           "need a container (LXD binds unix sockets only inside containers)")
    if DEVICE_NAME in (instance.get("devices") or {}):
        raise Conflict(f'Instance "{name}" already has a device "{DEVICE_NAME}"')
    core.lxd.add_instance_device(project, name, DEVICE_NAME, device,
                                 {KEY_GOVERNOR_SOCKET: deployment})
    return get_socket(core, project, deployment, name)


def remove_socket(core: Core, project: str, deployment: str, name: str) -> None:
    get_socket(core, project, deployment, name)  # 404 unless it is this deployment's
    core.lxd.remove_instance_device(project, name, DEVICE_NAME, [KEY_GOVERNOR_SOCKET])

"""An instance says "ready" itself: the one-time token and the socket a launch gives it.

A shape with a launching hook (`lifecycle.launch_timeout`) and `lifecycle.ready_socket`
lets each of its instances end its own hook, without a deployment key. Before the
instance is started (cold or taken from the warm pool), its launch:

1. makes a token (`auth/instance_token.py`: `ldr1.<record id>.<secret>`) and stores
   only the SHA-256 of its secret on the record;
2. adds the proxy device `lxd-deployments-ready`: the service's in-instance socket,
   bound inside the instance at `lifecycle.ready_socket` (`unix:/path`, mode 0600 owned
   by root, or `tcp:127.0.0.1:PORT`, the instance's own loopback);
3. pushes `/etc/lxd-deployments-ready` (root, 0600), a shell-sourceable file:
   `LXD_DEPLOYMENTS_READY_SOCKET`, `LXD_DEPLOYMENTS_READY_URL` (its lifecycle path,
   with `?project=`) and `LXD_DEPLOYMENTS_READY_TOKEN`.

The instance then sends `POST $URL {"action": "continue"}` with
`Authorization: Bearer $TOKEN` to the socket. Why a pushed file and not a `user.*`
key (which the instance could read through /dev/lxd): a config key is shown to anyone
with read access to LXD and, through `GET .../instances/{i}`, to every key of the
deployment, `ro` ones included; a file inside the instance is readable only there (and
by LXD's admins, who can answer the hook anyway). The socket takes the token on that
one route only, and the token is gone once used (see `auth/instance_token.py`).

Containers only: LXD binds proxy sockets inside containers, not virtual machines (a
VM's launch leaves the answer to the governor). The device stays after the hook: the
socket it leads to takes bearer tokens only, and this instance's is revoked.
"""

from __future__ import annotations

import contextlib
import logging
import shlex

from ..auth import instance_token
from ..errors import Conflict, InvalidInput
from ..models import InstanceTemplate
from ..store import instances as records
from . import lifecycle
from .context import Core
from .target import Target
from .urls import shape_instance_url

logger = logging.getLogger(__name__)

DEVICE_NAME = "lxd-deployments-ready"
READY_FILE = "/etc/lxd-deployments-ready"


def device(core: Core, address: str) -> dict[str, str]:
    """The proxy device that puts the in-instance socket at `address` in the instance."""
    if core.instance_socket is None:
        raise InvalidInput("This service serves no in-instance socket (jwt.enabled is off): "
                           "its instances cannot say they are ready themselves")
    found = {"type": "proxy", "bind": "instance", "listen": address,
             "connect": f"unix:{core.instance_socket}"}
    if address.startswith("unix:"):
        found.update(uid="0", gid="0", mode="0600")
    return found


def ready_file(target: Target, name: str, address: str, token: str) -> bytes:
    """The file pushed into the instance: shell-sourceable, so that even busybox's `sh`
    and `wget` can say "ready" with it."""
    url = shape_instance_url(target.project, target.deployment.name, target.shape.name, name)
    path, _, query = url.partition("?")
    answer_path = f"{path}/lifecycle?{query or 'project=' + target.project}"
    lines = ["# Written by lxd-deployments. Once this instance is ready, POST",
             '# {"action": "continue"} to $LXD_DEPLOYMENTS_READY_URL on the socket, with',
             '# "Authorization: Bearer $LXD_DEPLOYMENTS_READY_TOKEN". The token works once.',
             f"LXD_DEPLOYMENTS_READY_SOCKET={shlex.quote(address)}",
             f"LXD_DEPLOYMENTS_READY_URL={shlex.quote(answer_path)}",
             f"LXD_DEPLOYMENTS_READY_TOKEN={shlex.quote(token)}"]
    return ("\n".join(lines) + "\n").encode()


def prepare(core: Core, target: Target, name: str, record_id: int, address: str) -> None:
    """Give the (stopped) instance its token, file and socket; raises when LXD refuses,
    and the launch fails (an instance that expects to say "ready" must be able to)."""
    token, token_hash = instance_token.new_token(record_id)
    with core.db.write() as conn:
        records.set_ready_token_hash(conn, record_id, token_hash)
    project = target.project
    # Conflict: a warm instance given one before, or a retried launch: it is there.
    with contextlib.suppress(Conflict):
        core.lxd.add_instance_device(project, name, DEVICE_NAME, device(core, address))
    core.lxd.push_file(project, name, READY_FILE, ready_file(target, name, address, token))
    logger.info("instance %s may say it is ready on %s", name, address)


def check_shape(core: Core, config: dict[str, str], instance_type: str | None) -> None:
    """Refuse `lifecycle.ready_socket` where it could never work (400)."""
    if not config.get(lifecycle.READY_SOCKET_KEY):
        return
    if core.instance_socket is None:
        raise InvalidInput(f"{lifecycle.READY_SOCKET_KEY} needs the in-instance socket, "
                           "which this service does not serve (jwt.enabled is off)")
    if instance_type == "virtual-machine":
        raise InvalidInput(f"{lifecycle.READY_SOCKET_KEY} is for containers: LXD binds "
                           "proxy sockets only inside containers")


def address_for(core: Core, target: Target, config: dict[str, str]) -> str:
    """Where this launch's instance says it is ready ("": it does not, the governor
    answers): the shape asks for it and the service and the instance type allow it."""
    address = lifecycle.ready_socket(config)
    if not address or core.instance_socket is None:
        return ""
    template = InstanceTemplate.model_validate_json(target.shape.instance_template)
    return "" if template.type == "virtual-machine" else address

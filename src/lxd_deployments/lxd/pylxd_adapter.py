"""The LXD adapter over pylxd's low-level API nodes (no lazy managers), one client shared.

pylxd is synchronous: the API layer calls these methods from worker threads, never on
the event loop.

The adapter may start without a client (LXD not there yet when the service starts):
every call then raises `LXDUnavailable` saying what is wrong, until `attach` gives it
one (`open_client` makes it, the daemon retries with backoff).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pylxd
import requests
import requests.adapters
import urllib3
from pylxd import exceptions as pylxd_errors

from ..config import ConfigError, LXDSettings
from ..errors import Conflict, InvalidInput, LXDBusy, LXDUnavailable, NotFound
from . import events
from .adapter import ClusterMember, EventHandler, Profile

logger = logging.getLogger(__name__)


def _lxd_message(err: pylxd_errors.LXDAPIException) -> str:
    try:
        return err.response.json().get("error") or str(err)
    except (ValueError, AttributeError):
        return str(err)


def _is_busy(message: str) -> bool:
    """LXD's words for an instance another change holds ("Instance is busy running a
    "stop" operation"), which a moment later may go through."""
    return "is busy" in message.lower()


def _unavailable(err: Exception) -> LXDUnavailable:
    if isinstance(err, pylxd_errors.LXDAPIException):
        message = _lxd_message(err)
        kind = LXDBusy if _is_busy(message) else LXDUnavailable
        return kind(f"LXD refused the request: {message}")
    return LXDUnavailable(f"LXD is unreachable: {err}")


class PylxdAdapter:
    """Talks to one LXD (local socket or HTTPS) through a single pylxd client."""

    def __init__(self, client: pylxd.Client | None = None, *,
                 problem: str = "the service has not connected to LXD yet") -> None:
        self._pylxd = client
        self.problem = problem
        # (when read, members or None): whether LXD is clustered, asked at most every
        # few seconds (placement asks on every launch).
        self._cluster: tuple[float, list[ClusterMember] | None] | None = None
        self._cluster_lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._pylxd is not None

    def attach(self, client: pylxd.Client) -> None:
        """Use this client from now on (LXD answered)."""
        self._pylxd = client

    @property
    def _client(self) -> pylxd.Client:
        client = self._pylxd
        if client is None:
            raise LXDUnavailable(f"LXD is not available: {self.problem}")
        return client

    def _get(self, node: Any, project: str | None = None) -> dict[str, Any] | None:
        """GET an API node: its metadata, None on 404, `LXDUnavailable` on anything else."""
        params = {"project": project} if project else None
        try:
            return node.get(params=params).json()["metadata"]
        except pylxd_errors.NotFound:
            return None
        except pylxd_errors.LXDAPIException as err:
            raise LXDUnavailable(f"LXD refused the request: {_lxd_message(err)}") from err
        except requests.RequestException as err:
            raise LXDUnavailable(f"LXD is unreachable: {err}") from err

    def project_exists(self, project: str) -> bool:
        return self._get(self._client.api.projects[project]) is not None

    def image_type(self, project: str, *, alias: str | None = None,
                   fingerprint: str | None = None) -> str | None:
        if alias:
            found = self._get(self._client.api.images.aliases[alias], project)
        elif fingerprint:
            found = self._get(self._client.api.images[fingerprint], project)
        else:
            return None
        if found is None:
            return None
        return str(found.get("type") or "container")  # LXD before image types: containers

    def get_profile(self, project: str, name: str) -> Profile | None:
        metadata = self._get(self._client.api.profiles[name], project)
        if metadata is None:
            return None
        return Profile(name=name, config=dict(metadata.get("config") or {}),
                       devices={k: dict(v) for k, v in (metadata.get("devices") or {}).items()})

    def instance_exists(self, project: str, name: str) -> bool:
        return self._get(self._client.api.instances[name], project) is not None

    def get_instance(self, project: str, name: str) -> dict[str, Any] | None:
        node = self._client.api.instances[name]
        try:
            return node.get(params={"project": project, "recursion": 1}).json()["metadata"]
        except pylxd_errors.NotFound:
            return None
        except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
            raise _unavailable(err) from err

    def list_instances(self, project: str, *, with_state: bool = False) -> list[dict[str, Any]]:
        params = {"project": project, "recursion": 2 if with_state else 1}
        try:
            return self._client.api.instances.get(params=params).json()["metadata"]
        except pylxd_errors.NotFound:
            return []  # the project is gone
        except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
            raise _unavailable(err) from err

    def instance_names(self, project: str) -> set[str]:
        try:
            urls = self._client.api.instances.get(params={"project": project}).json()
        except pylxd_errors.NotFound:
            return set()
        except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
            raise _unavailable(err) from err
        # `/1.0/instances/NAME`, with `?project=P` outside the default project.
        return {url.split("?", 1)[0].rsplit("/", 1)[-1] for url in urls["metadata"] or []}

    def create_instance(self, project: str, body: dict[str, Any], *,
                        target: str | None = None) -> None:
        params = {"project": project, **({"target": target} if target else {})}
        try:
            self._wait(self._client.api.instances.post(params=params, json=body))
        except pylxd_errors.LXDAPIException as err:
            if err.response.status_code == 409:
                raise Conflict(f'Instance "{body.get("name")}" already exists in LXD') from err
            raise _unavailable(err) from err
        except requests.RequestException as err:
            raise _unavailable(err) from err

    def change_state(self, project: str, name: str, action: str, *, force: bool = False,
                     timeout: int = -1) -> None:
        node = self._client.api.instances[name].state
        body = {"action": action, "force": force, "timeout": timeout}
        try:
            self._wait(node.put(params={"project": project}, json=body))
        except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
            raise _unavailable(err) from err

    def delete_instance(self, project: str, name: str) -> None:
        node = self._client.api.instances[name]
        params = {"project": project}
        try:
            state = node.state.get(params=params).json()["metadata"]
            if state.get("status_code") != 102:  # 102 = Stopped
                try:
                    self._wait(node.state.put(params=params,
                                              json={"action": "stop", "force": True}))
                except LXDUnavailable:
                    # It may have stopped on its own in between ("not running"): then
                    # delete it all the same.
                    state = node.state.get(params=params).json()["metadata"]
                    if state.get("status_code") != 102:
                        raise
            self._wait(node.delete(params=params))
        except pylxd_errors.NotFound:
            return
        except pylxd_errors.LXDAPIException as err:
            message = _lxd_message(err)
            # "Instance is running": started again between our stop and the delete.
            kind = LXDBusy if _is_busy(message) or "is running" in message.lower() \
                else LXDUnavailable
            raise kind(f"LXD refused to delete {name}: {message}") from err
        except requests.RequestException as err:
            raise LXDUnavailable(f"LXD is unreachable: {err}") from err

    def cluster_members(self) -> list[ClusterMember] | None:
        now = time.monotonic()
        with self._cluster_lock:
            if self._cluster is not None and now - self._cluster[0] < _CLUSTER_CACHE_SECONDS:
                return self._cluster[1]
        server = self._get(self._client.api) or {}
        members: list[ClusterMember] | None = None
        if (server.get("environment") or {}).get("server_clustered"):
            try:
                listing = self._client.api.cluster.members.get(
                    params={"recursion": 1}).json()["metadata"] or []
            except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
                raise _unavailable(err) from err
            members = [ClusterMember(name=m.get("server_name", ""), status=m.get("status", ""),
                                     groups=tuple(m.get("groups") or ()))
                       for m in listing if isinstance(m, dict) and m.get("server_name")]
        with self._cluster_lock:
            self._cluster = (now, members)
        return members

    def cluster_groups(self) -> set[str] | None:
        if self.cluster_members() is None:
            return None
        try:
            listing = self._client.api.cluster.groups.get().json()["metadata"] or []
        except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
            raise _unavailable(err) from err
        return {str(url).rstrip("/").rsplit("/", 1)[-1] for url in listing}

    def get_resources(self, target: str | None = None) -> dict[str, Any]:
        if target is None:
            return self._get(self._client.api.resources) or {}
        try:
            return self._client.api.resources.get(
                params={"target": target}).json()["metadata"] or {}
        except pylxd_errors.LXDAPIException as err:
            raise LXDUnavailable(f"LXD refused the request: {_lxd_message(err)}") from err
        except requests.RequestException as err:
            raise LXDUnavailable(f"LXD is unreachable: {err}") from err

    def wait_for_instance_operations(self, project: str, timeout: float) -> int:
        listing = self._get(self._client.api.operations, project) or {}
        running = [op for group in ("running", "pending") for op in listing.get(group) or []]
        waited = 0
        for operation in running:
            if isinstance(operation, str):
                operation = self._get(self._client.api.operations[
                    operation.split("?", 1)[0].rsplit("/", 1)[-1]])
            if not operation or "instances" not in (operation.get("resources") or {}):
                continue
            try:
                self._client.api.operations[operation["id"]].wait.get(
                    params={"timeout": timeout})
            except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
                logger.info("operation %s ended while waited on: %s", operation["id"], err)
            waited += 1
        return waited

    def watch_events(self, handler: EventHandler, stop: threading.Event, *,
                     on_connect: Callable[[], None] | None = None,
                     projects: Iterable[str] | None = None) -> None:
        events.watch(events.socket_factory(self._client), handler, stop,
                     on_connect=on_connect, projects=projects)

    def add_instance_device(self, project: str, name: str, device_name: str,
                            device: dict[str, str], config: dict[str, str] | None = None
                            ) -> None:
        def change(instance: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            if device_name in (instance.get("devices") or {}):
                raise Conflict(f'Instance "{name}" already has a device "{device_name}"')
            # PATCH merges devices and config into what the instance has.
            return "patch", {"devices": {device_name: device}, "config": dict(config or {})}

        self._change_instance(project, name, change)

    def remove_instance_device(self, project: str, name: str, device_name: str,
                               config_keys: Iterable[str] = ()) -> None:
        def change(instance: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            devices = dict(instance.get("devices") or {})
            if devices.pop(device_name, None) is None:
                raise NotFound(f'Instance "{name}" has no device "{device_name}"')
            config = {k: v for k, v in (instance.get("config") or {}).items()
                      if k not in set(config_keys)}
            # PUT replaces the writable fields: the device and the keys are gone.
            return "put", {**{k: instance[k] for k in _INSTANCE_WRITABLE if k in instance},
                           "devices": devices, "config": config}

        self._change_instance(project, name, change)

    def push_file(self, project: str, name: str, path: str, content: bytes, *,
                  mode: int = 0o600) -> None:
        node = self._client.api.instances[name].files
        headers = {"X-LXD-type": "file", "X-LXD-uid": "0", "X-LXD-gid": "0",
                   "X-LXD-mode": f"{mode:04o}", "X-LXD-write": "overwrite",
                   "Content-Type": "application/octet-stream"}
        try:
            node.post(params={"project": project, "path": path}, data=content,
                      headers=headers)
        except pylxd_errors.NotFound:
            raise NotFound(f'Instance "{name}" not found in project "{project}"') from None
        except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
            raise _unavailable(err) from err

    def rename_instance(self, project: str, name: str, new_name: str) -> None:
        node = self._client.api.instances[name]
        try:
            self._wait(node.post(params={"project": project}, json={"name": new_name}))
        except pylxd_errors.NotFound:
            raise NotFound(f'Instance "{name}" not found in project "{project}"') from None
        except pylxd_errors.LXDAPIException as err:
            if err.response.status_code == 409:
                raise Conflict(f'Instance "{new_name}" already exists in LXD') from err
            raise _unavailable(err) from err
        except requests.RequestException as err:
            raise _unavailable(err) from err

    def update_instance_config(self, project: str, name: str, config: dict[str, str],
                               remove: Iterable[str] = ()) -> None:
        dropped = set(remove)

        def change(instance: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            kept = {k: v for k, v in (instance.get("config") or {}).items()
                    if k not in dropped}
            return "put", {**{k: instance[k] for k in _INSTANCE_WRITABLE if k in instance},
                           "config": {**kept, **config}}

        self._change_instance(project, name, change)

    def _change_instance(self, project: str, name: str,
                         change: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
                         ) -> None:
        """Read the instance, compute a change from it, and send it with `If-Match`, so
        that nothing changed in between is lost; retried while someone else wins."""
        node = self._client.api.instances[name]
        params = {"project": project}
        for _attempt in range(_ETAG_ATTEMPTS):
            try:
                response = node.get(params=params)
            except pylxd_errors.NotFound:
                raise NotFound(f'Instance "{name}" not found in project "{project}"') from None
            except (pylxd_errors.LXDAPIException, requests.RequestException) as err:
                raise _unavailable(err) from err
            method, body = change(response.json()["metadata"])
            etag = response.headers.get("ETag")
            headers = {"If-Match": etag} if etag else {}
            try:
                self._wait(getattr(node, method)(params=params, json=body, headers=headers))
                return
            except pylxd_errors.NotFound:
                raise NotFound(f'Instance "{name}" not found in project "{project}"') from None
            except pylxd_errors.LXDAPIException as err:
                if err.response.status_code == 412:
                    continue  # changed since our read: read again
                if err.response.status_code == 400:
                    raise InvalidInput(f"LXD refused the change of instance {name}: "
                                       f"{_lxd_message(err)}") from err
                raise _unavailable(err) from err
            except requests.RequestException as err:
                raise _unavailable(err) from err
        raise LXDUnavailable(f"instance {name} kept changing while being changed; try again")

    def _wait(self, response: requests.Response) -> None:
        """Wait for the operation an async LXD answer started; raise its error if it failed."""
        operation = response.json().get("operation")
        if not operation:
            return
        # A clustered LXD answers `/1.0/operations/ID?project=P`: the id is before the query.
        operation_id = operation.split("?", 1)[0].rsplit("/", 1)[-1]
        result = self._client.api.operations[operation_id].wait.get(
            params={"timeout": 120}).json()["metadata"]
        if result.get("status_code") != 200:
            err = str(result.get("err") or result)
            raise (LXDBusy if _is_busy(err) else LXDUnavailable)(f"LXD operation failed: {err}")


# Reads and writes of an instance with If-Match before giving up (others changing it).
_ETAG_ATTEMPTS = 5
# The fields of an instance a PUT replaces (LXD's InstancePut, without `restore`).
_INSTANCE_WRITABLE = ("architecture", "config", "devices", "ephemeral", "profiles",
                      "stateful", "description")

# Seconds a listing of LXD's cluster members is used before asking again.
_CLUSTER_CACHE_SECONDS = 10.0

# Connections kept open to LXD's socket: enough for every operation worker and request
# thread at once (more are opened when needed, and closed after use).
_UNIX_POOL_SIZE = 64
_UNIX_SOCKET_TIMEOUT = 60.0


class _UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, socket_path: str) -> None:
        super().__init__("localhost", timeout=_UNIX_SOCKET_TIMEOUT)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_UNIX_SOCKET_TIMEOUT)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixConnectionPool(urllib3.HTTPConnectionPool):
    def __init__(self, socket_path: str) -> None:
        super().__init__("localhost", maxsize=_UNIX_POOL_SIZE)
        self._socket_path = socket_path

    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self._socket_path)


class _UnixAdapter(requests.adapters.HTTPAdapter):
    """Every request to LXD's unix socket through one keep-alive pool.

    pylxd's own adapter keys its pools by the full URL, so each new instance name or
    operation id opens a new connection to LXD; a launch makes five such requests."""

    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self._pool = _UnixConnectionPool(socket_path)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def get_connection(self, url, proxies=None):  # requests < 2.32
        return self._pool

    def request_url(self, request, proxies):
        return request.path_url

    def close(self) -> None:
        self._pool.close()


def _unix_session(socket_path: str) -> requests.Session:
    session = requests.Session()
    # No proxy, netrc or CA bundle applies to a unix socket: skip requests' look-ups of
    # the environment on every request.
    session.trust_env = False
    session.mount("http+unix://", _UnixAdapter(socket_path))
    return session


def _unix_problem(path: Path) -> str | None:
    """What keeps us from LXD's socket, in words; None when something listens there."""
    if not path.exists():
        return f"no LXD socket at {path} (is LXD installed and started?)"
    if not path.is_socket():
        return f"{path} is not a socket"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        return f"nothing listens on {path} (is LXD stopped?)"
    except PermissionError:
        return (f"permission denied on {path} (the service must run as root or in "
                "LXD's group)")
    except OSError as err:
        return f"cannot connect to {path}: {err.strerror or err}"
    finally:
        probe.close()
    return None


def open_client(settings: LXDSettings) -> pylxd.Client:
    """A pylxd client to the LXD the settings describe (HTTPS URL, else the local
    socket), once it answers; `LXDUnavailable` saying why not otherwise."""
    if settings.url:
        cert = None
        if settings.client_cert and settings.client_key:
            cert = (str(settings.client_cert), str(settings.client_key))
        verify: bool | str = settings.verify
        if settings.verify and settings.server_cert:
            verify = str(settings.server_cert)
        try:
            return pylxd.Client(endpoint=settings.url, cert=cert, verify=verify)
        except (pylxd_errors.ClientConnectionFailed, requests.RequestException) as err:
            raise LXDUnavailable(f"LXD at {settings.url} does not answer: {err}") from err
    try:
        path = settings.resolve_socket()
    except ConfigError as err:
        raise LXDUnavailable(str(err)) from err
    problem = _unix_problem(path)
    if problem is not None:
        raise LXDUnavailable(problem)
    # The URL form (not the path), so that pylxd never looks at the file itself.
    endpoint = f"http+unix://{quote(str(path), safe='')}"
    try:
        return pylxd.Client(endpoint=endpoint, session=_unix_session(str(path)))
    except (pylxd_errors.ClientConnectionFailed, requests.RequestException) as err:
        raise LXDUnavailable(f"LXD on {path} does not answer: {err}") from err


def describe(settings: LXDSettings) -> str:
    """Where the settings point at, for the log."""
    if settings.url:
        return settings.url
    try:
        return str(settings.resolve_socket())
    except ConfigError:
        return "the local LXD socket"


def connect(settings: LXDSettings) -> PylxdAdapter:
    """An adapter with a client to LXD now; `LXDUnavailable` if LXD does not answer."""
    adapter = PylxdAdapter(open_client(settings))
    logger.info("connected to LXD %s", describe(settings))
    return adapter

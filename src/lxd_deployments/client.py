"""A small client for the Deployments API: LXD-style REST over the unix socket or HTTPS.

Both the `lxd-deployments` CLI and the Juju charm reach the service through this module,
so it knows nothing about either: it sends a request, unwraps LXD's response envelope and
turns every failure into one of a few exceptions (as pylxd checks every answer in one
place). Usage::

    with DeploymentsClient() as client:                  # the local unix socket
        dep = client.get("/1.0/deployments/web")
        client.put("/1.0/deployments/web", json={...}, headers={"If-Match": dep.etag})

    remote = DeploymentsClient(url="https://10.0.0.1:8443",
                               cert=("client.crt", "client.key"), verify="server.crt")
"""

from __future__ import annotations

import copy
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

# Environment variable naming the service's unix socket; the CLI and tests use it.
SOCKET_ENV = "LXD_DEPLOYMENTS_SOCKET"
# Where the service listens when nothing says otherwise (the snap/charm layout).
DEFAULT_SOCKET = "/var/lib/lxd-deployments/unix.socket"
# Where a governor socket appears inside an instance, by default (an LXD proxy device to
# the service's in-instance socket; JWTs only).
DEFAULT_INSTANCE_SOCKET = "/dev/lxd-deployments.sock"
# Requests over a unix socket still need a URL; LXD's own clients use this host name.
UNIX_BASE_URL = "http://lxd"
# Seconds a plain request may take: long enough for a forced delete, short enough that a
# hung service cannot block a charm hook forever.
DEFAULT_TIMEOUT = 120.0
# Seconds allowed on top of an operation wait's own timeout before the socket gives up.
_WAIT_MARGIN = 10.0

# LXD operation status codes (shared/api/status_code.go).
OPERATION_SUCCESS = 200
OPERATION_FAILURE = 400
OPERATION_CANCELLED = 401
_FINAL_OPERATION_CODES = frozenset({OPERATION_SUCCESS, OPERATION_FAILURE, OPERATION_CANCELLED})


class ClientError(Exception):
    """Base of everything this client raises; `message` is fit to show a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceUnreachable(ClientError):
    """The service could not be reached (socket missing, refused, timed out, TLS failed)."""


class APIError(ClientError):
    """The service answered with an error envelope; `status_code` is the HTTP error code."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"APIError({self.status_code!r}, {self.message!r})"


class OperationFailed(APIError):
    """A background operation ended in failure or was cancelled; `operation` says which."""

    def __init__(self, operation: Operation) -> None:
        message = operation.err or f"Operation {operation.status.lower() or 'failed'}"
        super().__init__(operation.status_code, message)
        self.operation = operation


@dataclass(frozen=True)
class Response:
    """One unwrapped answer: the envelope's `metadata` plus what callers act on next."""

    status_code: int
    metadata: Any
    etag: str | None = None
    # URL of the background operation when the answer was async (HTTP 202), else None.
    operation: str | None = None


@dataclass(frozen=True)
class Operation:
    """An LXD operation object, typed for the fields callers decide on."""

    id: str
    status: str
    status_code: int
    err: str = ""
    description: str = ""
    resources: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    may_cancel: bool = False

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Operation:
        """Build from the API's JSON, tolerating missing optional fields."""
        return cls(
            id=str(data.get("id", "")),
            status=str(data.get("status", "")),
            status_code=int(data.get("status_code", 0)),
            err=str(data.get("err") or ""),
            description=str(data.get("description") or ""),
            resources=data.get("resources") or {},
            metadata=data.get("metadata") or {},
            may_cancel=bool(data.get("may_cancel", False)),
        )

    @property
    def done(self) -> bool:
        """True once the operation has succeeded, failed or been cancelled."""
        return self.status_code in _FINAL_OPERATION_CODES


class DeploymentsClient:
    """LXD-style REST client for the Deployments API.

    Without `url` it talks to the unix socket `socket_path` (default: `$LXD_DEPLOYMENTS_SOCKET`,
    else `DEFAULT_SOCKET`). With `url` (https://host:port) it uses TLS: `cert` is the
    client certificate as `(cert_path, key_path)`, `verify` is True (system CAs), False, a
    CA/server-certificate path to pin, or a ready `ssl.SSLContext`. `project` is sent as
    `?project=` on every request, as LXD's `UseProject`. `transport` replaces the network
    (tests pass an `httpx.MockTransport`). `auth` adds credentials to every request (a
    governor's JWTs: see `governor_client.JWTAuth`).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        cert: tuple[str, str] | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        project: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        if url is None:
            path = os.fspath(socket_path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)
            self.target = f"unix socket {path}"
            base_url = UNIX_BASE_URL
            if transport is None:
                transport = httpx.HTTPTransport(uds=path)
        else:
            self.target = url
            base_url = url.rstrip("/")
            if transport is None:
                transport = httpx.HTTPTransport(verify=_ssl_context(cert, verify))
        self._project = project
        # trust_env=False: an HTTP(S)_PROXY in the environment must never divert requests
        # meant for the local socket or a pinned server.
        self._http = httpx.Client(
            base_url=base_url, transport=transport, timeout=timeout, trust_env=False, auth=auth
        )

    @property
    def project(self) -> str | None:
        """The LXD project sent with every request, or None for the server's default."""
        return self._project

    def use_project(self, project: str | None) -> DeploymentsClient:
        """Return a client for `project` sharing this one's connections (LXD's UseProject)."""
        clone = copy.copy(self)
        clone._project = project
        return clone

    def close(self) -> None:
        """Close the connection pool (shared with clients made by `use_project`)."""
        self._http.close()

    def __enter__(self) -> DeploymentsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- requests ----------------------------------------------------------------------

    def get(
        self,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.request("GET", path, json=json, params=params, headers=headers)

    def post(
        self,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.request("POST", path, json=json, params=params, headers=headers)

    def put(
        self,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.request("PUT", path, json=json, params=params, headers=headers)

    def patch(
        self,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.request("PATCH", path, json=json, params=params, headers=headers)

    def delete(
        self,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.request("DELETE", path, json=json, params=params, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | object | None = httpx.USE_CLIENT_DEFAULT,
    ) -> Response:
        """Send one request and unwrap the envelope; raise APIError or ServiceUnreachable."""
        query: dict[str, Any] = {"project": self._project} if self._project else {}
        query.update(params or {})
        try:
            answer = self._http.request(
                method,
                path,
                json=json,
                params=query or None,
                headers=dict(headers or {}),
                timeout=timeout,  # type: ignore[arg-type]
            )
        except httpx.TransportError as err:
            reason = str(err) or type(err).__name__
            raise ServiceUnreachable(
                f"Cannot reach the deployments service at {self.target}: {reason}"
            ) from err
        return _unwrap(answer)

    def wait_operation(self, op_url: str, timeout: int = -1) -> Operation:
        """Wait up to `timeout` seconds (-1: until done) for an operation and return it.

        Raises OperationFailed when it failed or was cancelled. When the timeout expires
        first the operation comes back still running (`done` is False), as LXD does.
        """
        http_timeout = None if timeout < 0 else timeout + _WAIT_MARGIN
        # Outside the default project the URL carries `?project=`, as LXD's do.
        path, _, query = op_url.partition("?")
        answer = self.request(
            "GET",
            f"{path.rstrip('/')}/wait",
            params={**dict(httpx.QueryParams(query)), "timeout": timeout},
            timeout=http_timeout,
        )
        operation = Operation.from_api(answer.metadata or {})
        if operation.status_code in (OPERATION_FAILURE, OPERATION_CANCELLED):
            raise OperationFailed(operation)
        return operation


def _unwrap(answer: httpx.Response) -> Response:
    """Turn an HTTP answer into a Response, or raise APIError for any error answer."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    etag = answer.headers.get("ETag")
    if isinstance(body, dict) and "type" in body:
        if body["type"] == "error" or answer.is_error:
            code = body.get("error_code") or answer.status_code
            raise APIError(int(code), str(body.get("error") or answer.reason_phrase))
        operation = None
        if body["type"] == "async":
            operation = body.get("operation") or answer.headers.get("Location") or None
        return Response(answer.status_code, body.get("metadata"), etag, operation)
    # Not an LXD envelope: a proxy page or a framework's default error. Keep its words.
    if answer.is_error:
        raise APIError(answer.status_code, _plain_error_message(answer, body))
    return Response(answer.status_code, body, etag, None)


def _plain_error_message(answer: httpx.Response, body: Any) -> str:
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    text = answer.text.strip()
    return text[:500] if text else f"HTTP {answer.status_code} {answer.reason_phrase}"


def _ssl_context(
    cert: tuple[str, str] | None,
    verify: bool | str | os.PathLike[str] | ssl.SSLContext,
) -> ssl.SSLContext:
    """Build the TLS context for a remote service (httpx's `cert=` is deprecated)."""
    try:
        if isinstance(verify, ssl.SSLContext):
            context = verify
        elif verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif verify is True:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=os.fspath(verify))
        if cert is not None:
            context.load_cert_chain(certfile=cert[0], keyfile=cert[1])
    except (OSError, ssl.SSLError) as err:
        raise ClientError(f"Cannot load TLS certificates: {err}") from err
    return context

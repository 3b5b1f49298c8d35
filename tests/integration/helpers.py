"""Assertions shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


class API:
    """The service's REST API in one LXD project, returning raw responses."""

    def __init__(self, http: httpx.Client, project: str) -> None:
        self.http = http
        self.project = project

    def _params(self, extra: dict | None = None) -> dict:
        return {"project": self.project, **(extra or {})}

    def get(self, path: str, **params) -> httpx.Response:
        return self.http.get(path, params=self._params(params))

    def post(self, path: str, body: dict, **params) -> httpx.Response:
        return self.http.post(path, params=self._params(params), json=body)

    def put(self, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
        return self.http.put(path, params=self._params(), json=body, headers=headers)

    def patch(self, path: str, body: dict) -> httpx.Response:
        return self.http.patch(path, params=self._params(), json=body)

    def delete(self, path: str, **params) -> httpx.Response:
        return self.http.delete(path, params=self._params(params))

    def names(self, collection: str) -> list[str]:
        return sorted(item["name"] for item in ok(self.get(collection, recursion=1)))


def error_of(response: httpx.Response) -> tuple[int, str]:
    """The HTTP status and message of LXD's error envelope, checking that it is one."""
    body = response.json()
    assert body["type"] == "error", body
    assert body["error_code"] == response.status_code, body
    assert body["metadata"] is None, body
    return response.status_code, body["error"]


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The metadata of a successful sync answer, checking the envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "sync", body
    assert body["error_code"] == 0, body
    return body["metadata"]


def cli_ok(result) -> str:
    """The stdout of a CLI run that must have succeeded."""
    assert result.code == 0, f"exit {result.code}: {result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def cli_error(result) -> str:
    """The message of a CLI run that must have failed as lxc does (`Error: ...`, exit 1)."""
    assert result.code == 1, f"exit {result.code}: {result.stdout}{result.stderr}"
    assert result.stderr.startswith("Error: "), result.stderr
    return result.stderr.removeprefix("Error: ").strip()


# The config keys the service writes on every instance it creates.
KEY_PREFIX = "user.lxd-deployments."
KEY_DEPLOYMENT = KEY_PREFIX + "deployment"
KEY_SHAPE = KEY_PREFIX + "shape"
KEY_SERVICE = KEY_PREFIX + "service"


def accepted(response: httpx.Response) -> dict:
    """The operation of an async answer (202), checking LXD's async envelope."""
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["type"] == "async", body
    assert body["status_code"] == 100, body
    # Outside the default project the URL names it, as LXD's operation URLs do.
    assert body["operation"].partition("?")[0] == f"/1.0/operations/{body['metadata']['id']}", \
        body
    assert response.headers["Location"] == body["operation"], response.headers
    return body["metadata"]


def wait_operation(http: httpx.Client, operation: dict | str, timeout: float = 60) -> dict:
    """Wait for an operation (its object or its id) to end; its final object."""
    op_id = operation if isinstance(operation, str) else operation["id"]
    final = ok(http.get(f"/1.0/operations/{op_id}/wait", params={"timeout": timeout},
                        timeout=timeout + 10))
    assert final["status"] in ("Success", "Failure", "Cancelled"), final
    return final


def succeeded(http: httpx.Client, response: httpx.Response) -> dict:
    """Wait for the operation of an async answer, which must succeed."""
    final = wait_operation(http, accepted(response))
    assert (final["status"], final["status_code"], final["err"]) == ("Success", 200, ""), final
    return final


def operation_ids(http: httpx.Client) -> set[str]:
    """Ids of every operation the service lists (all statuses)."""
    grouped = ok(http.get("/1.0/operations"))
    return {url.partition("?")[0].rsplit("/", 1)[-1]
            for urls in grouped.values() for url in urls}


def poll_until(check: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Call `check` until it returns something true (returned), or fail after `timeout`
    seconds saying `what` did not happen. For what another process does in its own time
    (LXD events reaching the service): there is nothing to block on."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {value!r})")
        time.sleep(interval)


def ours(instance: dict, service_id: str, deployment: str | None = None,
         shape: str | None = None) -> bool:
    """Whether an LXD instance object carries the service's keys (for that shape)."""
    config = instance.get("config") or {}
    return (config.get(KEY_SERVICE) == service_id
            and (deployment is None or config.get(KEY_DEPLOYMENT) == deployment)
            and (shape is None or config.get(KEY_SHAPE) == shape))


def shape_records(service, project: str, shape: str,
                  deployment: str | None = None) -> dict[str, str]:
    """The service's instance records of a shape, straight from its store: name -> status
    (`deployment` narrows it when several deployments of the project have that shape)."""
    query = ("SELECT i.instance_name, i.status FROM deployments_shapes_instances i "
             "JOIN deployments_shapes s ON s.id = i.shape_id "
             "JOIN deployments d ON d.id = s.deployment_id "
             "WHERE d.project = ? AND s.name = ?")
    if deployment is None:
        return dict(service.query(query, project, shape))
    return dict(service.query(query + " AND d.name = ?", project, shape, deployment))

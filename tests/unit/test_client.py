"""DeploymentsClient: the envelope is unwrapped, errors become exceptions, requests carry
what LXD's clients carry (project, If-Match, operation waits)."""

from __future__ import annotations

import json

import httpx
import pytest

from lxd_deployments.client import (
    APIError,
    ClientError,
    DeploymentsClient,
    OperationFailed,
    ServiceUnreachable,
)


def envelope_sync(metadata, status_code=200):
    return {
        "type": "sync",
        "status": "Success",
        "status_code": status_code,
        "operation": "",
        "error_code": 0,
        "error": "",
        "metadata": metadata,
    }


def envelope_error(code, message):
    return {
        "type": "error",
        "status": "",
        "status_code": 0,
        "error_code": code,
        "error": message,
        "metadata": None,
    }


def client_answering(handler, **kwargs) -> tuple[DeploymentsClient, list[httpx.Request]]:
    """A client whose every request is recorded and answered by `handler`."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return DeploymentsClient(transport=httpx.MockTransport(record), **kwargs), seen


def test_sync_answer_gives_metadata_and_etag():
    client, seen = client_answering(
        lambda request: httpx.Response(
            200, json=envelope_sync({"name": "web"}), headers={"ETag": '"abc"'}
        )
    )

    answer = client.get("/1.0/deployments/web")

    assert answer.metadata == {"name": "web"}
    assert answer.etag == '"abc"'
    assert answer.status_code == 200
    assert answer.operation is None
    assert seen[0].url == "http://lxd/1.0/deployments/web"


def test_error_envelope_raises_api_error_with_its_message():
    client, _ = client_answering(
        lambda request: httpx.Response(404, json=envelope_error(404, "Deployment not found"))
    )

    with pytest.raises(APIError) as caught:
        client.get("/1.0/deployments/nope")

    assert caught.value.status_code == 404
    assert caught.value.message == "Deployment not found"


def test_async_answer_carries_the_operation_url():
    body = {
        "type": "async",
        "status": "Operation created",
        "status_code": 100,
        "operation": "/1.0/operations/1234",
        "metadata": {"id": "1234", "status": "Running", "status_code": 103},
    }
    client, _ = client_answering(lambda request: httpx.Response(202, json=body))

    answer = client.post("/1.0/deployments/d/shapes/s/instances", json={"instance_name": "c1"})

    assert answer.status_code == 202
    assert answer.operation == "/1.0/operations/1234"


def test_error_without_envelope_keeps_the_frameworks_words():
    client, _ = client_answering(
        lambda request: httpx.Response(422, json={"detail": "body is not valid"})
    )

    with pytest.raises(APIError) as caught:
        client.put("/1.0/deployments/d", json={})

    assert caught.value.status_code == 422
    assert "body is not valid" in caught.value.message


def test_json_params_and_headers_are_sent():
    client, seen = client_answering(lambda request: httpx.Response(200, json=envelope_sync({})))

    client.put(
        "/1.0/deployments/d",
        json={"description": "x"},
        params={"force": "1"},
        headers={"If-Match": '"e1"'},
    )

    assert seen[0].method == "PUT"
    assert json.loads(seen[0].content) == {"description": "x"}
    assert seen[0].url.params["force"] == "1"
    assert seen[0].headers["If-Match"] == '"e1"'


def test_project_is_sent_on_every_request_of_a_project_client():
    client, seen = client_answering(lambda request: httpx.Response(200, json=envelope_sync([])))
    in_project = client.use_project("tenant")

    in_project.get("/1.0/deployments", params={"recursion": "1"})
    client.get("/1.0/deployments")

    assert dict(seen[0].url.params) == {"project": "tenant", "recursion": "1"}
    assert "project" not in seen[1].url.params
    assert in_project.project == "tenant"
    assert client.project is None


def test_missing_socket_is_reported_as_unreachable_naming_the_socket(tmp_path):
    socket_path = tmp_path / "absent.socket"
    client = DeploymentsClient(socket_path)

    with pytest.raises(ServiceUnreachable) as caught:
        client.get("/1.0")

    assert str(socket_path) in caught.value.message


def test_socket_defaults_to_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("LXD_DEPLOYMENTS_SOCKET", str(tmp_path / "env.socket"))

    client = DeploymentsClient()

    assert client.target == f"unix socket {tmp_path / 'env.socket'}"


def test_remote_url_without_verification_builds_a_client():
    client = DeploymentsClient(url="https://127.0.0.1:8443/", verify=False)

    assert client.target == "https://127.0.0.1:8443/"


def test_unreadable_client_certificate_is_a_client_error(tmp_path):
    with pytest.raises(ClientError) as caught:
        DeploymentsClient(
            url="https://127.0.0.1:8443",
            cert=(str(tmp_path / "missing.crt"), str(tmp_path / "missing.key")),
        )

    assert "certificate" in caught.value.message


def test_wait_operation_calls_wait_with_the_timeout_and_returns_the_operation():
    operation = {"id": "op1", "status": "Success", "status_code": 200, "err": ""}
    client, seen = client_answering(
        lambda request: httpx.Response(200, json=envelope_sync(operation))
    )

    result = client.wait_operation("/1.0/operations/op1", timeout=30)

    assert seen[0].url.path == "/1.0/operations/op1/wait"
    assert seen[0].url.params["timeout"] == "30"
    assert result.id == "op1"
    assert result.done


def test_wait_operation_returns_a_running_operation_when_the_timeout_expires():
    operation = {"id": "op1", "status": "Running", "status_code": 103}
    client, _ = client_answering(lambda request: httpx.Response(200, json=envelope_sync(operation)))

    result = client.wait_operation("/1.0/operations/op1", timeout=1)

    assert not result.done


def test_failed_operation_raises_with_its_error():
    operation = {"id": "op1", "status": "Failure", "status_code": 400, "err": "Image not found"}
    client, _ = client_answering(lambda request: httpx.Response(200, json=envelope_sync(operation)))

    with pytest.raises(OperationFailed) as caught:
        client.wait_operation("/1.0/operations/op1")

    assert caught.value.message == "Image not found"
    assert caught.value.operation.id == "op1"


def test_wait_operation_keeps_the_project_of_the_operation_url():
    operation = {"id": "op1", "status": "Success", "status_code": 200, "err": ""}
    client, seen = client_answering(
        lambda request: httpx.Response(200, json=envelope_sync(operation))
    )

    client.wait_operation("/1.0/operations/op1?project=p1", timeout=5)

    assert seen[0].url.path == "/1.0/operations/op1/wait"
    assert dict(seen[0].url.params) == {"project": "p1", "timeout": "5"}

"""pylxd, LXD's Python client, waits on the service's operations as on LXD's own:
`Operation.wait_for_operation` against the service's unix socket, for an operation that
succeeds and one that fails."""

from __future__ import annotations

import pylxd
import pytest
from pylxd import exceptions as pylxd_errors
from pylxd.models.operation import Operation

from .helpers import API, ok


@pytest.fixture
def client(service, lxd_project):
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "web"}), 201)
    ok(api.post("/1.0/deployments/web/shapes", {
        "name": "front", "scaling_maximum": 2,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
    # pylxd takes a unix socket path as its endpoint.
    return pylxd.Client(endpoint=str(service.socket_path), project=lxd_project)


def _instances(client):
    return client.api.deployments["web"].shapes["front"].instances


def test_pylxd_waits_for_a_launch_to_end(client, lxd, lxd_project):
    answer = _instances(client).post(json={"instance_name": "c1"})
    assert answer.status_code == 202

    operation = Operation.wait_for_operation(client, answer.json()["operation"])

    assert (operation.status, operation.err) == ("Success", "")
    assert lxd.states(lxd_project)["c1"] == "RUNNING"


def test_pylxd_raises_when_the_operation_fails(client, lxd, lxd_project):
    created = _instances(client).post(json={"instance_name": "c1", "start": False})
    Operation.wait_for_operation(client, created.json()["operation"])
    assert lxd.states(lxd_project)["c1"] == "STOPPED"

    # LXD cannot freeze a stopped instance: the operation fails, and pylxd says so.
    answer = _instances(client)["c1"].state.put(json={"action": "freeze"})
    with pytest.raises(pylxd_errors.LXDAPIException) as failed:
        Operation.wait_for_operation(client, answer.json()["operation"])
    assert "running" in str(failed.value).lower()

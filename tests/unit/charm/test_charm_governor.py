"""The `governor` relation: a governor charm asks for a key and gets one (or an error)."""

from __future__ import annotations

import pytest
from ops import testing
from scenario.mocking import _MockModelBackend as MockModelBackend

from lxd_deployments_charm.certs import fingerprint, make_client_pair

GOVERNOR = make_client_pair("governor")
SERVER = make_client_pair("server")
WEB = "web: {shapes: {frontend: {image: busybox, max: 3}}}"


@pytest.fixture
def serving(workload):
    """The service has made its HTTPS certificate (it does on first start)."""
    workload.paths.state_dir.mkdir(parents=True, exist_ok=True)
    workload.paths.server_cert.write_text(SERVER.certificate)
    return workload


def _governor(**app_data) -> testing.Relation:
    data = {"certificate": GOVERNOR.certificate, "deployment": "web", "role": "rw",
            **app_data}
    return testing.Relation("governor", interface="lxd-deployments-governor",
                            remote_app_name="autoscaler",
                            remote_app_data={k: v for k, v in data.items() if v is not None})


def _changed(ctx, relation, leader=True, deployments=WEB, **state):
    return ctx.run(ctx.on.relation_changed(relation), testing.State(
        leader=leader, relations={relation}, config={"deployments": deployments}, **state))


def test_a_governor_gets_a_key_named_from_the_relation(ctx, serving, service):
    relation = _governor()

    state_out = _changed(ctx, relation)

    key_name = f"juju-relation-{relation.id}"
    key = service.find_key("default", "web", key_name)
    assert key["role"] == "rw"
    assert key["certificate_fingerprint"] == GOVERNOR.fingerprint
    out = state_out.get_relation(relation.id)
    assert out.local_app_data == {
        "deployment": "web", "project": "default", "key_name": key_name, "role": "rw",
        "certificate_fingerprint": GOVERNOR.fingerprint}
    assert out.local_unit_data["endpoint"] == "https://192.0.2.0:8444"
    assert out.local_unit_data["server_certificate"] == SERVER.certificate
    assert out.local_unit_data["key_name"] == key_name
    assert "autoscaler" not in str(out.local_app_data) + str(out.local_unit_data)
    assert state_out.unit_status.name == "active"


def test_a_non_leader_provisions_its_own_service_but_writes_only_its_unit_data(
        ctx, serving, service):
    relation = _governor()

    state_out = _changed(ctx, relation, leader=False)

    assert service.find_key("default", "web", f"juju-relation-{relation.id}") is not None
    out = state_out.get_relation(relation.id)
    assert out.local_app_data == {}
    assert out.local_unit_data["certificate_fingerprint"] == GOVERNOR.fingerprint


def test_no_endpoint_is_published_before_the_server_certificate_exists(ctx, workload):
    relation = _governor()

    state_out = _changed(ctx, relation)

    out = state_out.get_relation(relation.id)
    assert "endpoint" not in out.local_unit_data
    assert out.local_app_data["key_name"] == f"juju-relation-{relation.id}"


def test_an_unknown_deployment_is_published_as_the_requests_error(ctx, serving, service):
    relation = _governor(deployment="shop")

    state_out = _changed(ctx, relation)

    error = 'unknown deployment "shop" in project "default"'
    assert state_out.get_relation(relation.id).local_app_data == {"error": error}
    assert state_out.get_relation(relation.id).local_unit_data["error"] == error
    assert state_out.unit_status.name == "active"  # the governor's problem, not ours


def test_a_certificate_of_the_wrong_type_is_the_services_error(ctx, serving, service):
    service.add_certificate(GOVERNOR.certificate, name="admin", kind="client")
    relation = _governor()

    state_out = _changed(ctx, relation)

    error = state_out.get_relation(relation.id).local_app_data["error"]
    assert 'a deployment key needs type "deployments"' in error


@pytest.mark.parametrize(("data", "problem"), [
    ({"role": "superuser"}, "invalid request: role: Input should be 'rw' or 'ro'"),
    ({"certificate": GOVERNOR.private_key},
     "invalid request: certificate: holds a private key: publish the certificate only"),
    ({"certificate": "hello"}, "invalid request: certificate: is not a PEM certificate"),
    ({"webhook_url": "ftp://x"},
     "invalid request: webhook_url: must be an http:// or https:// URL"),
])
def test_bad_relation_data_is_reported_back_and_grants_nothing(ctx, serving, service, data,
                                                               problem):
    relation = _governor(**data)

    state_out = _changed(ctx, relation)

    assert state_out.get_relation(relation.id).local_app_data == {"error": problem}
    assert service.list_keys("default", "web") == []


@pytest.mark.parametrize("data", [{}, {"deployment": "web"},
                                  {"certificate": GOVERNOR.certificate}])
def test_an_empty_or_partial_request_is_waited_for(ctx, serving, service, data):
    relation = testing.Relation("governor", remote_app_data=data)

    state_out = _changed(ctx, relation)

    assert state_out.get_relation(relation.id).local_app_data == {}
    assert service.list_keys("default", "web") == []
    assert state_out.unit_status.name == "active"


def test_relation_broken_revokes_the_key_and_its_certificate(ctx, serving, service):
    relation = _governor()
    state = _changed(ctx, relation)

    state_out = ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)

    assert service.list_keys("default", "web") == []
    assert service.find_certificate(GOVERNOR.fingerprint) is None
    assert state_out.unit_status.name == "active"


def test_a_certificate_an_admin_trusted_by_hand_survives_the_revocation(
        ctx, serving, service):
    service.add_certificate(GOVERNOR.certificate, name="by-hand", kind="deployments")
    relation = _governor()
    state = _changed(ctx, relation)

    ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)

    assert service.list_keys("default", "web") == []
    assert service.find_certificate(GOVERNOR.fingerprint)["name"] == "by-hand"


def test_a_new_certificate_replaces_the_key(ctx, serving, service):
    relation = _governor()
    state = _changed(ctx, relation)
    rotated = make_client_pair("governor-2")
    relation = state.get_relation(relation.id)
    new_relation = testing.Relation(
        "governor", id=relation.id, remote_app_data={**relation.remote_app_data,
                                                     "certificate": rotated.certificate},
        local_app_data=relation.local_app_data, local_unit_data=relation.local_unit_data)

    state_out = _changed(ctx, new_relation)

    key = service.find_key("default", "web", f"juju-relation-{relation.id}")
    assert key["certificate_fingerprint"] == fingerprint(rotated.certificate)
    assert service.find_certificate(GOVERNOR.fingerprint) is None
    assert state_out.get_relation(relation.id).local_app_data[
        "certificate_fingerprint"] == rotated.fingerprint


def test_moving_to_another_deployment_revokes_the_first_key(ctx, serving, service):
    two = WEB + "\nshop: {shapes: {front: {image: busybox, max: 1}}}"
    relation = _governor()
    state = _changed(ctx, relation, deployments=two)
    relation = state.get_relation(relation.id)
    moved = testing.Relation("governor", id=relation.id, remote_app_data={
        **relation.remote_app_data, "deployment": "shop", "role": "ro"},
        local_app_data=relation.local_app_data, local_unit_data=relation.local_unit_data)

    _changed(ctx, moved, deployments=two)

    assert service.list_keys("default", "web") == []
    assert service.find_key("default", "shop", f"juju-relation-{relation.id}")["role"] == "ro"


def test_a_role_change_updates_the_key(ctx, serving, service):
    relation = _governor()
    state = _changed(ctx, relation)
    relation = state.get_relation(relation.id)
    read_only = testing.Relation("governor", id=relation.id, remote_app_data={
        **relation.remote_app_data, "role": "ro"}, local_app_data=relation.local_app_data,
        local_unit_data=relation.local_unit_data)

    _changed(ctx, read_only)

    assert service.find_key("default", "web", f"juju-relation-{relation.id}")["role"] == "ro"


def test_a_governors_webhook_url_goes_to_its_deployment(ctx, serving, service):
    relation = _governor(webhook_url="https://governor.example/hook")

    _changed(ctx, relation)

    assert service.get_deployment("default", "web")["governor_webhook_url"] == \
        "https://governor.example/hook"


def test_the_options_webhook_url_wins_over_the_governors(ctx, serving, service):
    relation = _governor(webhook_url="https://governor.example/hook")
    deployments = "web: {webhook_url: 'https://admin.example/hook', shapes: {}}"

    _changed(ctx, relation, deployments=deployments)

    assert service.get_deployment("default", "web")["governor_webhook_url"] == \
        "https://admin.example/hook"


def test_a_hand_made_deployment_gets_the_governors_webhook_url(ctx, serving, service):
    service.create_deployment("default", {"name": "manual"})
    relation = _governor(deployment="manual", webhook_url="https://governor.example/hook")

    _changed(ctx, relation, deployments="")

    assert service.get_deployment("default", "manual")["governor_webhook_url"] == \
        "https://governor.example/hook"
    assert service.find_key("default", "manual", f"juju-relation-{relation.id}")


def test_two_governors_get_two_keys(ctx, serving, service):
    first, second = _governor(), _governor(certificate=make_client_pair("g2").certificate)

    ctx.run(ctx.on.relation_changed(first), testing.State(
        leader=True, relations={first, second}, config={"deployments": WEB}))

    names = sorted(k["name"] for k in service.list_keys("default", "web"))
    assert names == sorted([f"juju-relation-{first.id}", f"juju-relation-{second.id}"])


def test_governors_are_served_while_the_deployments_option_is_invalid(ctx, serving, service):
    service.create_deployment("default", {"name": "web"})
    relation = _governor()

    state_out = _changed(ctx, relation, deployments="web: [")

    assert service.find_key("default", "web", f"juju-relation-{relation.id}") is not None
    assert state_out.unit_status.name == "blocked"
    assert state_out.unit_status.message.startswith("deployments: invalid YAML")


def test_each_relation_gets_the_ingress_address_juju_gives_for_it(
        ctx, serving, service, monkeypatch):
    """Across models Juju gives each relation the address to advertise (`network-get -r`,
    its ingress address): the endpoint published on that relation is that one, and a
    relation in this model gets the endpoint binding's own."""
    local = _governor()
    cross_model = _governor(certificate=make_client_pair("other-model").certificate)
    real_network_get = MockModelBackend.network_get

    def network_get(self, binding_name, relation_id=None):
        answer = real_network_get(self, binding_name, relation_id)
        if relation_id == cross_model.id:
            answer = {**answer, "ingress-addresses": ["203.0.113.7"]}
        return answer
    monkeypatch.setattr(MockModelBackend, "network_get", network_get)

    state_out = ctx.run(ctx.on.relation_changed(cross_model), testing.State(
        leader=True, relations={local, cross_model}, config={"deployments": WEB},
        networks={testing.Network("governor", ingress_addresses=["10.1.0.5"])}))

    assert state_out.get_relation(local.id).local_unit_data["endpoint"] == \
        "https://10.1.0.5:8444"
    assert state_out.get_relation(cross_model.id).local_unit_data["endpoint"] == \
        "https://203.0.113.7:8444"

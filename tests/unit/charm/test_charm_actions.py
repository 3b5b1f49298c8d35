"""The charm's actions, against the in-process service (LXD faked at its adapter)."""

from __future__ import annotations

import pytest
import yaml
from ops import testing

from lxd_deployments_charm.certs import make_client_pair

WEB = "web: {shapes: {frontend: {image: busybox, min: 1, max: 3}}}"


@pytest.fixture
def state(ctx, workload):
    """A unit that has reconciled the WEB deployment."""
    return ctx.run(ctx.on.config_changed(),
                   testing.State(leader=True, config={"deployments": WEB}))


def test_create_key_for_a_given_certificate(ctx, state, service):
    governor = make_client_pair("governor")

    ctx.run(ctx.on.action("create-key", params={
        "deployment": "web", "name": "autoscaler", "role": "rw",
        "certificate": governor.certificate}), state)

    assert ctx.action_results == {
        "deployment": "web", "project": "default", "key": "autoscaler", "role": "rw",
        "fingerprint": governor.fingerprint, "certificate": governor.certificate}
    assert service.find_key("default", "web", "autoscaler")["role"] == "rw"


def test_create_key_makes_a_pair_and_hands_the_private_key_over_as_a_secret(
        ctx, state, service):
    state_out = ctx.run(ctx.on.action("create-key", params={
        "deployment": "web", "name": "autoscaler", "role": "admin"}), state)

    results = ctx.action_results
    assert results["role"] == "rw"
    assert "PRIVATE KEY" not in str(results)
    (secret,) = state_out.secrets
    assert results["private-key-secret"] == secret.id
    content = secret.tracked_content
    assert "PRIVATE KEY" in content["private-key"]
    assert content["certificate"] == results["certificate"]
    key = service.find_key("default", "web", "autoscaler")
    assert key["certificate_fingerprint"] == results["fingerprint"]


@pytest.mark.parametrize(("params", "message"), [
    ({"deployment": "shop", "name": "k"}, "Deployment not found"),
    ({"deployment": "web", "name": "k", "certificate": "junk"},
     "invalid parameters: certificate: certificate must be one PEM certificate (never "
     "a private key)"),
    ({"deployment": "web", "name": "k", "role": "god"},
     "invalid parameters: role: Input should be 'rw', 'ro', 'admin' or 'read-only'"),
])
def test_create_key_failures_say_what_is_wrong(ctx, state, service, params, message):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("create-key", params=params), state)

    assert failure.value.message.startswith(message)
    assert failure.value.state.secrets == frozenset()


def test_create_key_never_accepts_a_private_key_as_certificate(ctx, state):
    pair = make_client_pair("governor")

    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("create-key", params={
            "deployment": "web", "name": "k", "certificate": pair.private_key}), state)

    assert "never a private key" in failure.value.message
    # pydantic would quote the input: the key must not reach Juju's logs that way
    assert "PRIVATE KEY" not in failure.value.message
    assert "PRIVATE KEY" not in str(failure.value.state.deferred)


def test_list_and_delete_keys(ctx, state, service):
    governor = make_client_pair("governor")
    service.create_key("default", "web", "autoscaler", role="rw",
                       certificate=governor.certificate)

    ctx.run(ctx.on.action("list-keys", params={"deployment": "web"}), state)
    listed = dict(ctx.action_results)
    ctx.run(ctx.on.action("delete-key", params={"deployment": "web", "name": "autoscaler"}),
            state)

    assert listed["count"] == "1"
    assert listed["keys"]["autoscaler"]["role"] == "rw"
    assert listed["keys"]["autoscaler"]["certificate-fingerprint"] == governor.fingerprint
    assert ctx.action_results == {"deleted": "autoscaler", "deployment": "web"}
    assert service.list_keys("default", "web") == []


def test_delete_key_of_an_unknown_key_fails(ctx, state):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("delete-key", params={"deployment": "web", "name": "nope"}),
                state)

    assert failure.value.message == "Deployment key not found"


def test_scale_up_then_down_reports_each_instance(ctx, state, service):
    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": 3}), state)
    up = dict(ctx.action_results)
    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": 1}), state)
    down = dict(ctx.action_results)

    assert (up["before"], up["after"]) == ("0", "3")
    assert len(up["instances"]) == 3
    assert all(i["action"] == "launch" and i["status"] == "done"
               for i in up["instances"].values())
    assert all(name.startswith("frontend-") for name in up["instances"])
    assert (down["before"], down["after"]) == ("3", "1")
    assert sorted(i["action"] for i in down["instances"].values()) == ["delete", "delete"]
    assert service.get_shape("default", "web", "frontend")["scaling_current"] == 1


def test_scale_to_the_same_count_changes_nothing(ctx, state, service):
    service.scale("default", "web", "frontend", 2)

    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": 2}), state)

    assert ctx.action_results["instances"] == {}
    assert (ctx.action_results["before"], ctx.action_results["after"]) == ("2", "2")


@pytest.mark.parametrize("count", [0, 4])
def test_scale_outside_the_bounds_fails_and_changes_nothing(ctx, state, service, count):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                               "count": count}), state)

    assert failure.value.message == (f'{count} is outside the bounds of shape "frontend" '
                                     f"(scaling_minimum 1, scaling_maximum 3)")
    assert service.get_shape("default", "web", "frontend")["scaling_current"] == 0


def test_scale_reports_instances_that_failed(ctx, state, service, fake_lxd, monkeypatch):
    monkeypatch.setattr("lxd_deployments_charm.service._new_names",
                        lambda shape, taken, count: ["good", "bad"][:count])
    fake_lxd.fail_create.add("bad")

    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                               "count": 2}), state)

    assert failure.value.message.startswith("1 of 2 instance change(s) failed: bad (")
    results = ctx.action_results
    assert results["instances"]["good"]["status"] == "done"
    assert results["instances"]["bad"]["status"] == "failed"
    assert results["after"] == "1"


def test_list_deployments_and_show(ctx, state, service):
    service.scale("default", "web", "frontend", 1)

    ctx.run(ctx.on.action("list-deployments"), state)
    listed = dict(ctx.action_results)
    ctx.run(ctx.on.action("show", params={"deployment": "web"}), state)
    shown = yaml.safe_load(ctx.action_results["yaml"])

    assert listed == {"count": "1", "deployments": {"web": {
        "name": "web", "project": "default", "description": "",
        "shapes": {"frontend": "1 (min 1, max 3)"}}}}
    assert shown["deployment_shapes"]["frontend"]["scaling_current"] == 1
    assert shown["keys"] == []


def test_show_an_unknown_deployment_fails(ctx, state):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("show", params={"deployment": "nope"}), state)

    assert failure.value.message == "Deployment not found"


def test_trusted_certificates_are_added_and_removed(ctx, state, service):
    admin = make_client_pair("admin")

    ctx.run(ctx.on.action("add-trusted-certificate", params={
        "certificate": admin.certificate, "name": "alice"}), state)
    added = dict(ctx.action_results)
    ctx.run(ctx.on.action("remove-trusted-certificate", params={
        "fingerprint": admin.fingerprint[:12]}), state)

    assert added == {"fingerprint": admin.fingerprint, "type": "client", "name": "alice"}
    assert ctx.action_results == {"removed": admin.fingerprint, "name": "alice"}
    assert service.find_certificate(admin.fingerprint) is None


def test_removing_an_unknown_certificate_fails(ctx, state):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("remove-trusted-certificate", params={"fingerprint": "abcdef"}),
                state)

    assert failure.value.message == 'no trusted certificate has fingerprint "abcdef"'


def test_an_unreachable_service_fails_the_action_with_the_reason(ctx, state, workload):
    workload.service_up = False

    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("list-deployments"), state)

    assert failure.value.message.startswith("Cannot reach the deployments service at ")


def test_delete_key_removes_the_secret_create_key_made(ctx, state, service):
    state = ctx.run(ctx.on.action("create-key", params={
        "deployment": "web", "name": "autoscaler", "role": "rw"}), state)
    (secret,) = state.secrets

    state_out = ctx.run(ctx.on.action("delete-key", params={
        "deployment": "web", "name": "autoscaler"}), state)

    assert ctx.action_results["removed-secret"] == secret.id
    assert list(state_out.secrets) == []
    assert service.find_key("default", "web", "autoscaler") is None

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


def _scale(ctx, state, count, **params):
    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": count, **params}), state)
    return dict(ctx.action_results)


def test_scale_up_then_down_reports_each_instance(ctx, state, service):
    up = _scale(ctx, state, 3)
    down = _scale(ctx, state, 1)

    assert (up["before"], up["after"], up["requested"], up["granted"]) == ("0", "3", "3", "3")
    assert len(up["instances"]) == 3
    assert all(i["action"] == "launch" and i["status"] == "done"
               for i in up["instances"].values())
    # The service named them (`<deployment>-<shape>-...`), not the charm.
    assert all(name.startswith("web-frontend-") for name in up["instances"])
    assert (down["before"], down["after"], down["granted"]) == ("3", "1", "1")
    assert sorted(i["action"] for i in down["instances"].values()) == ["delete", "delete"]
    assert set(down["instances"]) < set(up["instances"])
    assert "error" not in down
    assert service.get_shape("default", "web", "frontend")["scaling_current"] == 1


def test_scale_to_the_same_count_changes_nothing(ctx, state, service):
    service.scale("default", "web", "frontend", 2)

    results = _scale(ctx, state, 2)

    assert results["instances"] == {}
    assert (results["before"], results["after"], results["granted"]) == ("2", "2", "2")


@pytest.mark.parametrize("count", [0, 4])
def test_scale_outside_the_bounds_fails_and_changes_nothing(ctx, state, service, count):
    with pytest.raises(testing.ActionFailed) as failure:
        _scale(ctx, state, count)

    # The service's own refusal (its 409), not a copy of its bounds check in the charm.
    assert failure.value.message == (f'Shape "frontend" cannot have {count} instance(s): '
                                     f"its bounds are 1 to 3")
    assert service.get_shape("default", "web", "frontend")["scaling_current"] == 0


def test_scale_best_effort_brings_the_count_within_the_bounds(ctx, state, service):
    results = _scale(ctx, state, 5, **{"best-effort": True})

    assert (results["requested"], results["granted"], results["after"]) == ("5", "3", "3")
    assert len(results["instances"]) == 3
    assert service.get_shape("default", "web", "frontend")["scaling_current"] == 3


def test_scale_in_follows_the_termination_policy_and_protection(ctx, state, service):
    """The charm asks the service, so scale-in picks what the shape's policy picks
    (`oldest` here, where the charm's own copy deleted the newest), never a protected
    instance."""
    service.scale("default", "web", "frontend", 1)
    (oldest,) = [i["name"] for i in service.list_instances("default", "web", "frontend")]
    service.scale("default", "web", "frontend", 3)
    protected, other = sorted({i["name"] for i in service.list_instances(
        "default", "web", "frontend")} - {oldest})
    service.client.patch("/1.0/deployments/web/shapes/frontend",
                         json={"config": {"scaling.termination_policy": "oldest"}})
    service.client.put(f"/1.0/deployments/web/shapes/frontend/instances/{protected}/protection",
                       json={"protected": True})

    first = _scale(ctx, state, 2)
    second = _scale(ctx, state, 1)

    assert list(first["instances"]) == [oldest]
    assert list(second["instances"]) == [other]
    assert [i["name"] for i in service.list_instances("default", "web", "frontend")] == [
        protected]


def test_scale_reports_instances_that_failed(ctx, state, service, fake_lxd, monkeypatch):
    monkeypatch.setattr("lxd_deployments.core.bulk.generate_names",
                        lambda deployment, shape, number, taken: ["good", "bad"][:number])
    fake_lxd.fail_create.add("bad")

    with pytest.raises(testing.ActionFailed) as failure:
        _scale(ctx, state, 2)

    # The batch operation's error, as the service wrote it.
    assert failure.value.message.startswith("1 of 2 launches failed: bad: ")
    results = ctx.action_results
    assert results["instances"]["good"]["status"] == "done"
    assert results["instances"]["bad"]["status"] == "failed"
    assert results["instances"]["bad"]["error"]
    assert results["error"] == failure.value.message
    assert (results["granted"], results["after"]) == ("2", "1")


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

"""The `deployments` option, reconciled with the (in-process, real) service."""

from __future__ import annotations

import pytest
from ops import testing

from lxd_deployments_charm.certs import make_client_pair
from lxd_deployments_charm.options import MANAGED_KEY

WEB = """
web:
  description: Web farm
  config: {user.team: web}
  shapes:
    frontend: {image: busybox, min: 0, max: 4}
    workers:
      instance_template: {source: {type: image, alias: busybox}, config: {limits.cpu: "1"}}
      max: 2
"""


def _run(ctx, deployments: str, **state):
    state.setdefault("leader", True)
    return ctx.run(ctx.on.config_changed(),
                   testing.State(config={"deployments": deployments}, **state))


def test_deployments_and_shapes_are_created(ctx, workload, service):
    state_out = _run(ctx, WEB)

    web = service.get_deployment("default", "web")
    assert web["description"] == "Web farm"
    assert web["config"] == {"user.team": "web", MANAGED_KEY: "lxd-deployments"}
    frontend = web["deployment_shapes"]["frontend"]
    assert (frontend["scaling_minimum"], frontend["scaling_maximum"]) == (0, 4)
    assert frontend["instance_template"]["source"]["alias"] == "busybox"
    workers = web["deployment_shapes"]["workers"]
    assert workers["instance_template"]["config"] == {"limits.cpu": "1"}
    assert state_out.unit_status.name == "active"


def test_an_unchanged_option_changes_nothing(ctx, workload, service, api):
    _run(ctx, WEB)
    etag = api.get("/1.0/deployments/web/shapes/frontend").headers["ETag"]

    _run(ctx, WEB)

    assert api.get("/1.0/deployments/web/shapes/frontend").headers["ETag"] == etag


def test_changes_are_applied(ctx, workload, service):
    _run(ctx, WEB)

    _run(ctx, WEB.replace("max: 4", "max: 6").replace("Web farm", "Shop"))

    web = service.get_deployment("default", "web")
    assert web["description"] == "Shop"
    assert web["deployment_shapes"]["frontend"]["scaling_maximum"] == 6


def test_a_shape_without_instances_is_removed_with_the_option(ctx, workload, service):
    _run(ctx, WEB)

    state_out = _run(ctx, WEB.split("    workers:")[0])

    assert set(service.get_deployment("default", "web")["deployment_shapes"]) == {"frontend"}
    assert state_out.unit_status.name == "active"


def test_a_shape_with_instances_is_never_removed_silently(ctx, workload, service):
    _run(ctx, WEB)
    service.scale("default", "web", "workers", 1)

    state_out = _run(ctx, WEB.split("    workers:")[0])

    assert state_out.unit_status == testing.BlockedStatus(
        "deployments: shape web/workers (project default) left the deployments option but "
        "has 1 instance(s): put it back, or run `juju run lxd-deployments/0 "
        "force-delete-shape deployment=web shape=workers project=default` to delete it and "
        "its instances")
    assert "workers" in service.get_deployment("default", "web")["deployment_shapes"]


def test_a_deployment_removed_from_the_option_goes_but_hand_made_ones_stay(
        ctx, workload, service):
    _run(ctx, WEB)
    service.create_deployment("default", {"name": "by-hand"})

    state_out = _run(ctx, "other:\n  shapes: {}\n")

    assert service.deployment_refs() == [("default", "by-hand"), ("default", "other")]
    assert state_out.unit_status.name == "active"


def test_a_hand_made_deployment_of_the_same_name_is_not_taken_over(ctx, workload, service):
    service.create_deployment("default", {"name": "web", "description": "mine"})

    state_out = _run(ctx, WEB)

    assert state_out.unit_status.name == "blocked"
    assert state_out.unit_status.message.startswith(
        'deployments: deployment "web" (project default) exists and is not managed by '
        "this charm")
    assert service.get_deployment("default", "web")["description"] == "mine"


@pytest.mark.parametrize(("text", "message"), [
    ("web: [", "deployments: invalid YAML at line 1, column 7: expected the node content, "
               "but found '<stream end>'"),
    ("- web", "deployments: must be a mapping of deployment names to deployments"),
    ("web: {shapes: {f: {image: busybox, max: many}}}",
     "deployments: web.shapes.f.max: Input should be a valid integer"),
    ("web: {shapes: {f: {image: busybox, min: 3, max: 2}}}",
     "deployments: web.shapes.f: max (2) must not be less than min (3)"),
    ("web: {shapes: {f: {max: 2}}}",
     "deployments: web.shapes.f: needs an image, profiles, or an instance_template"),
    ("web: {sizes: {}}", 'deployments: unknown key "web.sizes"'),
    ("web: {webhook_url: ftp://x}", "deployments: web.webhook_url: must be an http:// or "
                                    "https:// URL"),
])
def test_an_invalid_option_blocks_with_the_exact_error(ctx, workload, service, text, message):
    state_out = _run(ctx, text)

    assert state_out.unit_status == testing.BlockedStatus(message)
    assert service.deployment_refs() == []
    assert workload.systemd.restarts == 1  # the service itself still runs


def test_an_invalid_option_leaves_what_exists_alone(ctx, workload, service):
    _run(ctx, WEB)

    _run(ctx, "web: [")

    assert set(service.get_deployment("default", "web")["deployment_shapes"]) == {
        "frontend", "workers"}


def test_the_services_own_refusal_is_the_status(ctx, workload, service):
    state_out = _run(ctx, "web: {shapes: {f: {image: no-such-image, max: 1}}}")

    assert state_out.unit_status.name == "blocked"
    assert state_out.unit_status.message.startswith(
        "deployments: create shape web/f (project default): ")
    assert "no-such-image" in state_out.unit_status.message


def test_deployments_outside_the_allowed_projects_block(ctx, workload, service):
    state_out = ctx.run(ctx.on.config_changed(), testing.State(leader=True, config={
        "projects": "p1", "deployments": "web: {project: other}"}))

    assert state_out.unit_status == testing.BlockedStatus(
        "deployments outside the allowed projects (p1): web (other)")


# --- redeploys and removals never delete by accident (issue 18) ---------------------------


@pytest.mark.parametrize("state", [{"config": {}}, {"config": {"deployments": ""}},
                                   {"config": {"deployments": "# nothing yet\n"}}],
                         ids=["unset", "empty", "only-a-comment"])
def test_a_redeploy_on_a_kept_store_deletes_nothing(ctx, workload, service, state):
    """`install` on a kept store reconciles before `juju config` arrives: the option is
    unset or empty then, and that must not mean "delete the charm's deployments"."""
    _run(ctx, WEB)
    service.create_key("default", "web", "gov", role="rw",
                       certificate=make_client_pair("gov").certificate)

    state_out = ctx.run(ctx.on.install(), testing.State(leader=True, **state))

    assert service.deployment_refs() == [("default", "web")]
    assert sorted(service.get_deployment("default", "web")["deployment_shapes"]) == [
        "frontend", "workers"]
    assert [k["name"] for k in service.list_keys("default", "web")] == ["gov"]
    assert state_out.unit_status.name == "active"


def test_a_deployment_with_keys_left_out_blocks_and_names_the_action(ctx, workload, service):
    _run(ctx, WEB)
    service.create_key("default", "web", "gov", role="rw",
                       certificate=make_client_pair("gov").certificate)

    state_out = _run(ctx, "other:\n  shapes: {}\n")

    assert ("default", "web") in service.deployment_refs()
    assert state_out.unit_status == testing.BlockedStatus(
        "deployments: deployment web (project default) left the deployments option but has "
        "1 key(s): put it back, or run `juju run lxd-deployments/0 force-delete-deployment "
        "deployment=web project=default` to delete it with them")


def test_a_deployment_with_instances_left_out_blocks(ctx, workload, service):
    _run(ctx, WEB)
    service.scale("default", "web", "workers", 1)

    state_out = _run(ctx, "other:\n  shapes: {}\n")

    assert ("default", "web") in service.deployment_refs()
    assert "has 1 instance(s)" in state_out.unit_status.message
    assert "force-delete-deployment deployment=web" in state_out.unit_status.message


def test_force_delete_deployment_is_the_explicit_opt_in(ctx, workload, service):
    state = _run(ctx, WEB)
    service.scale("default", "web", "workers", 1)
    service.create_key("default", "web", "gov", role="rw",
                       certificate=make_client_pair("gov").certificate)

    ctx.run(ctx.on.action("force-delete-deployment", params={"deployment": "web"}), state)

    assert ctx.action_results == {"deleted": "web", "project": "default",
                                  "instances": "1", "keys": "1"}
    assert service.deployment_refs() == []


def test_force_delete_shape_deletes_it_with_its_instances(ctx, workload, service):
    state = _run(ctx, WEB)
    service.scale("default", "web", "workers", 1)

    ctx.run(ctx.on.action("force-delete-shape",
                          params={"deployment": "web", "shape": "workers"}), state)
    state_out = _run(ctx, WEB.split("    workers:")[0])

    assert ctx.action_results["instances"] == "1"
    assert sorted(service.get_deployment("default", "web")["deployment_shapes"]) == [
        "frontend"]
    assert state_out.unit_status.name == "active"


def test_force_delete_of_an_unknown_shape_fails_saying_so(ctx, workload, service):
    state = _run(ctx, WEB)

    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("force-delete-shape",
                              params={"deployment": "web", "shape": "nope"}), state)

    assert "not found" in failed.value.message.lower()

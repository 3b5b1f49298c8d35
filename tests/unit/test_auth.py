"""The authorization rules, in process: each request arrives as on the HTTPS listener with
a given client certificate (what `ServiceH11Protocol` puts in the scope), against the
real app and store, LXD faked. Real TLS handshakes are in test_https.py and the
integration tests.

Every refusal must leave the store (but the audit log) and LXD unchanged.
"""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from lxd_deployments.api import create_app
from lxd_deployments.auth import Authenticators, Caller, Listener, certificate_caller
from lxd_deployments.auth.caller import GOVERNOR, METHOD_JWT
from lxd_deployments.auth.dependencies import declared_policy
from lxd_deployments.auth.identify import Credentials, identify
from lxd_deployments.errors import Unauthorized
from tests.certs import make_certificate

from .conftest import error_of

SHAPE = "/1.0/deployments/{d}/shapes/front"
INSTANCES = SHAPE + "/instances"


def launch(client, deployment: str, name: str):
    return client.post(INSTANCES.format(d=deployment), json={"instance_name": name})


def wait(client, response, headers=None) -> dict:
    assert response.status_code == 202, response.json()
    answer = client.get(response.json()["operation"] + "/wait", params={"timeout": 10},
                        headers=headers)
    assert answer.status_code == 200, answer.json()
    return answer.json()["metadata"]


# --- no certificate, untrusted, unmarked -----------------------------------------------


def test_get_1_0_is_public_and_says_how_to_authenticate(world):
    info = world.anonymous.get("/1.0").json()["metadata"]
    assert info["auth"] == "untrusted"
    assert info["auth_methods"] == ["tls"]
    assert "auth_user_name" not in info
    assert world.anonymous.get("/").status_code == 200


def test_get_1_0_names_a_trusted_caller(world, api):
    info = world.admin.get("/1.0").json()["metadata"]
    assert info.items() >= {
        "auth": "trusted", "auth_user_method": "tls", "auth_user_kind": "admin",
        "auth_user_name": f"admin ({world.certificates.admin.fingerprint[:12]})"}.items()
    governor = world.rw.get("/1.0").json()["metadata"]
    assert (governor["auth"], governor["auth_user_kind"]) == ("trusted", "governor")
    local = api.get("/1.0").json()["metadata"]
    assert (local["auth_user_method"], local["auth_user_kind"]) == ("unix", "admin")


def _concrete(path: str, deployment: str) -> str:
    names = {"deployment": deployment, "shape": "front"}
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: names.get(m.group(1), "x"), path)


def api_routes(app):
    """Every route of the app, whether FastAPI flattens included routers or keeps them."""
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):
            for context in route.effective_route_contexts():
                yield context.original_route
        else:
            yield route


def _http_routes(app):
    for route in api_routes(app):
        if isinstance(route, APIRoute):
            for method in sorted(route.methods - {"HEAD"}):
                yield method, route


def test_without_a_certificate_everything_but_get_1_0_is_401(world, core, nothing_changes):
    app = create_app(core)
    requests = [(m, _concrete(r.path, "web")) for m, r in _http_routes(app)]
    requests += [("GET", "/1.0/openapi.json"), ("GET", "/1.0/no-such-thing"),
                 ("POST", "/1.0/deployments/web/shapes/front/instances")]
    with nothing_changes:
        for method, path in requests:
            if (method, path) in (("GET", "/1.0"), ("GET", "/")):
                continue
            response = world.anonymous.request(method, path, json={"name": "x"})
            assert error_of(response) == (401, "Not authorized: no client certificate (use a "
                                          "trusted client certificate, or a bearer token where "
                                          "offered)"), (method, path)


def test_a_certificate_not_in_the_trust_store_is_401(clients, world, nothing_changes):
    stranger = clients(make_certificate("stranger"))
    with nothing_changes:
        for response in (stranger.get("/1.0/deployments"), launch(stranger, "web", "c1"),
                         stranger.post("/1.0/certificates", json={
                             "certificate": make_certificate().pem, "type": "client"})):
            assert error_of(response) == (401, "Not authorized: the client certificate is "
                                          "not trusted")
    assert stranger.get("/1.0").json()["metadata"]["auth"] == "untrusted"


def test_a_request_no_listener_marked_is_anonymous(core, world):
    with TestClient(create_app(core)) as unmarked:
        assert unmarked.get("/1.0/deployments").status_code == 401
        assert unmarked.get("/1.0").json()["metadata"]["auth"] == "untrusted"


# --- admins ------------------------------------------------------------------------------


def test_a_client_certificate_is_an_admin(world, api):
    admin = world.admin
    assert admin.post("/1.0/deployments", json={"name": "blog"}).status_code == 201
    assert admin.get("/1.0/certificates").status_code == 200
    assert admin.patch("/1.0/deployments/web/shapes/front",
                       json={"scaling_maximum": 5}).status_code == 200
    operation = wait(admin, launch(admin, "shop", "c1"))
    assert operation["status"] == "Success"
    assert admin.get("/1.0/audit").status_code == 200
    assert api.get("/1.0/deployments/blog").status_code == 200


# --- governors ---------------------------------------------------------------------------


def test_an_rw_key_reads_launches_changes_and_deletes_in_its_deployment(world, fake_lxd):
    rw = world.rw
    assert rw.get("/1.0/deployments/web").status_code == 200
    assert rw.get("/1.0/deployments/web/shapes").status_code == 200
    assert rw.get(SHAPE.format(d="web")).status_code == 200
    assert rw.get("/1.0/deployments/web/changes").status_code == 200
    assert wait(rw, launch(rw, "web", "c1"))["status"] == "Success"
    assert ("default", "c1") in fake_lxd.instances
    assert rw.get(INSTANCES.format(d="web")).json()["metadata"] == [
        INSTANCES.format(d="web") + "/c1"]
    assert rw.get(INSTANCES.format(d="web") + "/c1").status_code == 200
    state = rw.put(INSTANCES.format(d="web") + "/c1/state", json={"action": "stop"})
    assert wait(rw, state)["status"] == "Success"
    assert wait(rw, rw.delete(INSTANCES.format(d="web") + "/c1"))["status"] == "Success"
    assert ("default", "c1") not in fake_lxd.instances


def test_an_ro_key_reads_but_may_not_launch_delete_or_change_state(world, api, nothing_changes):
    assert wait(api, launch(api, "web", "c1"))["status"] == "Success"
    ro = world.ro
    assert ro.get("/1.0/deployments/web").status_code == 200
    assert ro.get(INSTANCES.format(d="web") + "/c1").status_code == 200
    message = ('Deployment key "watcher" is read-only (role "ro"): it may not launch, delete '
               "or change instances")
    with nothing_changes:
        assert error_of(launch(ro, "web", "c2")) == (403, message)
        assert error_of(ro.post(INSTANCES.format(d="web") + "/c3")) == (403, message)
        assert error_of(ro.delete(INSTANCES.format(d="web") + "/c1")) == (403, message)
        assert error_of(ro.put(INSTANCES.format(d="web") + "/c1/state",
                               json={"action": "stop"})) == (403, message)


@pytest.mark.parametrize("target", ["shop", "no-such-deployment"])
def test_a_key_of_one_deployment_reaches_nothing_of_another(world, api, target,
                                                            nothing_changes):
    """403 whether the other deployment exists or not: nothing leaks about it."""
    if target == "shop":
        assert wait(api, launch(api, "shop", "c1"))["status"] == "Success"
    message = f'Not authorized for deployment "{target}" in project "default"'
    rw = world.rw
    with nothing_changes:
        for response in (
                rw.get(f"/1.0/deployments/{target}"),
                rw.get(f"/1.0/deployments/{target}/shapes"),
                rw.get(SHAPE.format(d=target)),
                rw.get(INSTANCES.format(d=target)),
                rw.get(INSTANCES.format(d=target) + "/c1"),
                rw.get(f"/1.0/deployments/{target}/changes"),
                launch(rw, target, "c2"),
                rw.delete(INSTANCES.format(d=target) + "/c1"),
                rw.put(INSTANCES.format(d=target) + "/c1/state", json={"action": "stop"}),
                # the same deployment name in another project is another deployment
                rw.get("/1.0/deployments/web", params={"project": "other"})):
            status, error = error_of(response)
            assert status == 403
            assert error in (message, 'Not authorized for deployment "web" in project "other"')


def test_a_governor_key_never_reaches_the_management_api(core, world, nothing_changes):
    """Every route that is not governor-facing answers a governor 403, even for its own
    deployment: it cannot make itself an admin, raise its own bounds or give itself keys."""
    app = create_app(core)
    refused = []
    with nothing_changes:
        for method, route in _http_routes(app):
            if declared_policy(route) not in (None, "admin"):
                continue
            path = _concrete(route.path, "web")
            body = {"name": "x", "certificate": world.certificates.rw.pem, "type": "client",
                    "scaling_maximum": 100, "role": "rw",
                    "certificate_fingerprint": world.certificates.rw.fingerprint}
            response = world.rw.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.json())
            refused.append((method, route.path))
    assert ("POST", "/1.0/certificates") in refused
    assert ("PATCH", "/1.0/deployments/{deployment}/shapes/{name}") in refused
    assert ("POST", "/1.0/deployments/{deployment}/keys") in refused
    assert ("GET", "/1.0/audit") in refused
    assert ("GET", "/1.0/deployments") in refused


GOVERNOR_ROUTES = {
    ("GET", "/"): "public",
    ("GET", "/1.0"): "public",
    ("GET", "/1.0/deployments/{name}"): "reader",
    ("GET", "/1.0/deployments/{deployment}/shapes"): "reader",
    ("GET", "/1.0/deployments/{deployment}/shapes/{name}"): "reader",
    ("GET", "/1.0/deployments/{deployment}/shapes/{shape}/instances"): "reader",
    ("GET", "/1.0/deployments/{deployment}/shapes/{shape}/instances/{name}"): "reader",
    ("POST", "/1.0/deployments/{deployment}/shapes/{shape}/instances"): "writer",
    ("POST", "/1.0/deployments/{deployment}/shapes/{shape}/instances/{name}"): "writer",
    ("DELETE", "/1.0/deployments/{deployment}/shapes/{shape}/instances/{name}"): "writer",
    ("PUT", "/1.0/deployments/{deployment}/shapes/{shape}/instances/{name}/state"): "writer",
    ("GET", "/1.0/deployments/{deployment}/shapes/{shape}/instances/{name}/lifecycle"):
        "reader",
    ("POST", "/1.0/deployments/{deployment}/shapes/{shape}/instances/{name}/lifecycle"):
        "writer",
    ("PUT", "/1.0/deployments/{deployment}/shapes/{shape}/instances/{name}/protection"):
        "writer",
    ("GET", "/1.0/deployments/{deployment}/changes"): "reader",
    ("GET", "/1.0/operations"): "authenticated",
    ("GET", "/1.0/operations/{operation_id}"): "authenticated",
    ("GET", "/1.0/operations/{operation_id}/wait"): "authenticated",
    ("DELETE", "/1.0/operations/{operation_id}"): "authenticated",
}
CORE_MODULES = {f"lxd_deployments.api.routes.{m}" for m in (
    "server", "deployments", "shapes", "instances", "changes", "keys", "certificates",
    "operations", "audit")}


def test_each_route_declares_who_may_call_it(core):
    """The contract's table: management routes are for admins, the governor API for keys
    of the deployment. A route that declares nothing is for admins only (fail closed)."""
    app = create_app(core)
    policies = {(method, route.path): declared_policy(route) or "admin"
                for method, route in _http_routes(app)
                if route.endpoint.__module__ in CORE_MODULES}
    assert {k: v for k, v in policies.items() if v != "admin"} == GOVERNOR_ROUTES
    for method, route in _http_routes(app):
        assert declared_policy(route) in (None, "admin", "metrics", "reader", "writer",
                                          "authenticated", "public"), (method, route.path)


def test_websockets_need_an_authenticated_caller(world):
    paths = [route.path for route in api_routes(world.anonymous.app.app.app)
             if isinstance(route, APIWebSocketRoute)]
    assert paths
    for path in paths:
        # The same 401 in LXD's envelope as every other route (not a refused handshake).
        with pytest.raises(WebSocketDenialResponse) as refused, \
                world.anonymous.websocket_connect(path):
            pass
        assert refused.value.status_code == 401
        body = refused.value.json()
        assert (body["type"], body["error_code"]) == ("error", 401), body


# --- operations ----------------------------------------------------------------------------


def test_a_governor_sees_only_its_own_operations(world, api):
    mine = wait(world.rw, launch(world.rw, "web", "c1"))
    theirs = wait(world.shop, launch(world.shop, "shop", "c2"))
    admins = wait(api, launch(api, "web", "c3"))

    def listed(client):
        grouped = client.get("/1.0/operations").json()["metadata"]
        return {url.rsplit("/", 1)[-1] for urls in grouped.values() for url in urls}

    assert listed(world.rw) == {mine["id"]}
    assert listed(world.shop) == {theirs["id"]}
    assert listed(world.ro) == set()  # same deployment, another key
    assert {mine["id"], theirs["id"], admins["id"]} <= listed(api)
    for path in (f"/1.0/operations/{theirs['id']}", f"/1.0/operations/{theirs['id']}/wait",
                 f"/1.0/operations/{admins['id']}"):
        assert error_of(world.rw.get(path)) == (404, "Operation not found")
    assert error_of(world.rw.delete(f"/1.0/operations/{theirs['id']}")) == (
        404, "Operation not found")
    assert world.rw.get(f"/1.0/operations/{mine['id']}").status_code == 200
    assert world.admin.get(f"/1.0/operations/{mine['id']}").status_code == 200


# --- revocation ----------------------------------------------------------------------------


def test_a_deleted_key_stops_working_on_the_next_request(world, api, nothing_changes):
    rw = world.rw
    assert rw.get("/1.0/deployments/web").status_code == 200
    assert api.delete("/1.0/deployments/web/keys/autoscaler").status_code == 200
    with nothing_changes:
        assert error_of(rw.get("/1.0/deployments/web")) == (
            403, 'Not authorized for deployment "web" in project "default"')
        assert error_of(launch(rw, "web", "c1"))[0] == 403


def test_a_removed_certificate_stops_working_on_the_next_request(world, api, nothing_changes):
    admin, rw = world.admin, world.rw
    assert admin.get("/1.0/deployments").status_code == 200
    for certificate in (world.certificates.admin, world.certificates.rw):
        assert api.delete(f"/1.0/certificates/{certificate.fingerprint}").status_code == 200
    with nothing_changes:
        for response in (admin.get("/1.0/deployments"), rw.get("/1.0/deployments/web"),
                         launch(rw, "web", "c1")):
            assert error_of(response) == (401, "Not authorized: the client certificate is "
                                          "not trusted")


def test_a_role_change_takes_effect_on_the_next_request(world, api, nothing_changes):
    assert api.patch("/1.0/deployments/web/keys/autoscaler", json={"role": "ro"}).status_code \
        == 200
    with nothing_changes:
        assert error_of(launch(world.rw, "web", "c1"))[0] == 403
    assert api.patch("/1.0/deployments/web/keys/autoscaler", json={"role": "rw"}).status_code \
        == 200
    assert wait(world.rw, launch(world.rw, "web", "c1"))["status"] == "Success"


def test_a_renamed_deployment_follows_its_keys(world, api):
    assert api.post("/1.0/deployments/web", json={"name": "site"}).status_code == 201
    assert world.rw.get("/1.0/deployments/site").status_code == 200
    assert world.rw.get("/1.0/deployments/web").status_code == 403


# --- bearer tokens: the hook the JWT authenticator plugs into -----------------------------


def test_bearer_tokens_are_refused_without_an_authenticator(world, nothing_changes):
    client = world.anonymous
    with nothing_changes:
        response = client.get("/1.0/deployments/web", headers={"Authorization": "Bearer x.y.z"})
        assert error_of(response) == (401, "Not authorized: this server does not accept "
                                      "bearer tokens")
        response = client.get("/1.0/deployments/web", headers={"Authorization": "Basic eDp5"})
        assert error_of(response) == (401, 'Not authorized: unsupported Authorization scheme '
                                      '"basic"')


def test_a_bearer_authenticator_makes_the_caller(core, world, clients, fake_lxd):
    seen = []

    def bearer(conn, token: str, credentials: Credentials) -> Caller:
        seen.append((token, credentials.project))
        if token != "good":
            raise Unauthorized("Not authorized: bad token")
        caller = certificate_caller(conn, world.certificates.rw.fingerprint, method=METHOD_JWT,
                                    deployment=(credentials.project, "web"))
        assert caller.kind == GOVERNOR
        return caller

    authenticators = Authenticators(bearer=bearer)
    anonymous = clients(None, authenticators=authenticators)
    assert anonymous.get("/1.0").json()["metadata"]["auth_methods"] == ["tls", "jwt"]
    good = {"Authorization": "Bearer good"}
    assert anonymous.get("/1.0", headers=good).json()["metadata"]["auth_user_method"] == "jwt"
    launched = anonymous.post(INSTANCES.format(d="web"), headers=good,
                              json={"instance_name": "c1"})
    assert wait(anonymous, launched, headers=good)["status"] == "Success"
    assert ("default", "c1") in fake_lxd.instances
    assert error_of(anonymous.get("/1.0/deployments/web",
                                  headers={"Authorization": "Bearer bad"})) == (
        401, "Not authorized: bad token")
    # A token that fails is never replaced by the client certificate that came with it.
    admin = clients(world.certificates.admin, authenticators=authenticators)
    assert admin.get("/1.0/deployments", headers={"Authorization": "Bearer bad"}) \
        .status_code == 401
    # On the in-instance socket, only a token identifies the caller.
    instance = clients(world.certificates.admin, Listener.INSTANCE, authenticators=authenticators)
    assert error_of(instance.get("/1.0/deployments")) == (
        401, "Not authorized: a bearer token is required on this socket")
    assert instance.get("/1.0/deployments/web", headers=good).status_code == 200
    assert ("good", "default") in seen


def test_the_unix_listener_is_an_admin_whatever_the_request_carries(core, world):
    credentials = Credentials(listener=Listener.UNIX, authorization="Bearer nonsense",
                              unix_uid=1000)
    caller = identify(core.db, credentials)
    assert (caller.kind, caller.method, caller.identity) == ("admin", "unix", "unix (uid 1000)")
    assert identify(core.db, Credentials(listener=None)).is_authenticated is False


def test_a_long_lived_callers_access_is_read_again_from_the_store(world, api, core):
    """What the events stream checks on an open connection: a deleted key leaves the
    grants, a removed certificate makes the caller anonymous."""
    from lxd_deployments.auth.identify import certificate_caller, refreshed

    with core.db.read() as conn:
        caller = certificate_caller(conn, world.certificates.rw.fingerprint)
    assert [g.key_name for g in caller.grants] == ["autoscaler"]
    assert api.delete("/1.0/deployments/web/keys/autoscaler").status_code == 200
    with core.db.read() as conn:
        assert refreshed(conn, caller).grants == ()
    assert api.delete(f"/1.0/certificates/{world.certificates.rw.fingerprint}"
                      ).status_code == 200
    with core.db.read() as conn:
        assert not refreshed(conn, caller).is_authenticated


# --- no existence oracle -------------------------------------------------------------------

TAKEN = 'Instance name "{}" is not available: choose another name'


def test_a_governor_at_its_maximum_gets_the_bound_answer_for_every_name(world, fake_lxd,
                                                                         nothing_changes):
    wait(world.shop, launch(world.shop, "shop", "theirs"))  # another tenant's instance
    fake_lxd.add_instance("default", "outside")  # not the service's at all
    for n in range(3):
        assert wait(world.rw, launch(world.rw, "web", f"mine{n}"))["status"] == "Success"
    at_maximum = ('Shape "front" is at its scaling_maximum (3): cannot launch another '
                  "instance")
    with nothing_changes:
        for name in ("theirs", "outside", "mine0", "nobody"):
            assert error_of(launch(world.rw, "web", name)) == (409, at_maximum)
        for names in (["theirs"], ["nobody"], ["theirs", "nobody"]):
            status, _ = error_of(world.rw.post(INSTANCES.format(d="web"), json={
                "instance_names": names, "best_effort": True}))
            assert status == 409


def test_a_governor_below_its_maximum_learns_nothing_of_names_taken_elsewhere(
        world, api, fake_lxd, nothing_changes):
    wait(world.shop, launch(world.shop, "shop", "theirs"))
    fake_lxd.add_instance("default", "outside")
    with nothing_changes:
        for name in ("theirs", "outside"):
            # The same answer for another tenant's instance and for one of LXD's.
            assert error_of(launch(world.rw, "web", name)) == (409, TAKEN.format(name))
            assert error_of(world.rw.post(INSTANCES.format(d="web"), json={
                "instance_names": ["fresh", name]})) == (409, TAKEN.format(name))
        # An admin is told what holds it.
        assert error_of(launch(api, "web", "outside")) == (
            409, 'Instance "outside" already exists in project "default"')
    # With best effort, only the names that fit are looked at: room 3, the 4th not.
    answer = world.rw.post(INSTANCES.format(d="web"), json={
        "instance_names": ["n1", "n2", "n3", "theirs"], "best_effort": True})
    assert wait(world.rw, answer)["status"] == "Success"

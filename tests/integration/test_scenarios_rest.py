"""LXD's own Deployments API test scenarios (test/suites/deployments.sh), step by step,
through the REST API of the real service, in a project of a real LXD (`?project=`).

The same scenarios run through the CLI in test_scenarios_cli.py.
"""

from __future__ import annotations

import pytest
import yaml

from tests.certs import make_certificate

from .helpers import API, error_of, ok
from .scenario_data import (
    DEP1_KEYS_YAML,
    DEP4_EDIT_YAML,
    DEP5_YAML,
    KEY1_EDIT_YAML,
    NEW_WEBHOOK,
    SHAPE3_EDIT_YAML,
    SHAPE3_YAML,
    TEST_PROFILE_DEVICES,
    TEST_PROFILE_YAML,
    WEBHOOK,
)


@pytest.fixture
def api(service, lxd_project) -> API:
    return API(service.http, lxd_project)


def test_simple_deployment(api: API, lxd_project: str):
    # Creating deployments: empty, with a description, a webhook URL, config.
    ok(api.post("/1.0/deployments", {"name": "dep1"}), 201)
    ok(api.post("/1.0/deployments", {
        "name": "dep2", "description": "This is a test description for dep2"}), 201)
    ok(api.post("/1.0/deployments", {
        "name": "dep3", "description": "This is a test description for dep3",
        "governor_webhook_url": WEBHOOK}), 201)
    created = api.post("/1.0/deployments", {
        "name": "dep4", "description": "Test description for dep4",
        "governor_webhook_url": WEBHOOK, "config": {"user.foo": "bar", "user.bar": "baz"}})
    ok(created, 201)
    assert created.headers["Location"] == f"/1.0/deployments/dep4?project={lxd_project}"
    # The YAML document LXD's test pipes to `create`, as the JSON body.
    ok(api.post("/1.0/deployments", {"name": "dep5", **yaml.safe_load(DEP5_YAML)}), 201)
    assert error_of(api.post("/1.0/deployments", {"name": "dep1"})) == (
        409, 'Deployment "dep1" already exists')

    # Listing: URLs, and objects with recursion=1.
    urls = ok(api.get("/1.0/deployments"))
    assert sorted(urls) == [f"/1.0/deployments/dep{i}?project={lxd_project}"
                            for i in range(1, 6)]
    assert api.names("/1.0/deployments") == ["dep1", "dep2", "dep3", "dep4", "dep5"]
    # Another project does not see them.
    assert ok(api.http.get("/1.0/deployments", params={"recursion": 1})) == []

    # Showing.
    dep1 = ok(api.get("/1.0/deployments/dep1"))
    assert dep1 == {"name": "dep1", "description": "", "config": {},
                    "governor_webhook_url": "", "deployment_shapes": {}, "used_by": []}
    dep4 = ok(api.get("/1.0/deployments/dep4"))
    assert dep4["config"] == {"user.foo": "bar", "user.bar": "baz"}
    assert dep4["governor_webhook_url"] == WEBHOOK
    dep5 = ok(api.get("/1.0/deployments/dep5"))
    assert dep5["description"] == "This is a test description for dep5"
    assert dep5["config"] == {"user.foo": "blah", "user.foo.bar": "blah2"}

    # Setting a property (PATCH) and a config key (GET, then PUT with If-Match).
    ok(api.patch("/1.0/deployments/dep4", {"governor_webhook_url": NEW_WEBHOOK}))
    assert ok(api.get("/1.0/deployments/dep4"))["governor_webhook_url"] == NEW_WEBHOOK
    answer = api.get("/1.0/deployments/dep4")
    etag = answer.headers["ETag"]
    body = {k: ok(answer)[k] for k in ("description", "config", "governor_webhook_url")}
    body["config"]["user.foo"] = "qux"
    ok(api.put("/1.0/deployments/dep4", body, headers={"If-Match": etag}))
    assert ok(api.get("/1.0/deployments/dep4"))["config"]["user.foo"] == "qux"
    # The same ETag is stale now.
    assert error_of(api.put("/1.0/deployments/dep4", body, headers={"If-Match": etag}))[0] == 412

    # Editing: PUT replaces every writable field (user.bar goes).
    ok(api.put("/1.0/deployments/dep4", yaml.safe_load(DEP4_EDIT_YAML)))
    dep4 = ok(api.get("/1.0/deployments/dep4"))
    assert dep4["description"] == "New description for dep4"
    assert dep4["governor_webhook_url"] == WEBHOOK
    assert dep4["config"] == {"user.foo": "blah2", "user.foo.bar": "blah3"}

    # Renaming.
    ok(api.post("/1.0/deployments/dep5", {"name": "dep6"}), 201)
    assert error_of(api.get("/1.0/deployments/dep5")) == (404, "Deployment not found")
    assert ok(api.get("/1.0/deployments/dep6"))["config"]["user.foo"] == "blah"

    # Deleting, and not-found errors.
    ok(api.delete("/1.0/deployments/dep1"))
    assert error_of(api.delete("/1.0/deployments/depNotFound")) == (404, "Deployment not found")
    assert error_of(api.get("/1.0/deployments/depNotFound")) == (404, "Deployment not found")
    assert error_of(api.put("/1.0/deployments/depNotFound", {}))[0] == 404
    for name in ("dep2", "dep3", "dep4", "dep6"):
        ok(api.delete(f"/1.0/deployments/{name}"))
    assert ok(api.get("/1.0/deployments")) == []


def test_deployment_shape(api: API, lxd, lxd_project: str):
    ok(api.post("/1.0/deployments", {"name": "dep1"}), 201)
    shapes = "/1.0/deployments/dep1/shapes"

    # Bounds: both zero refused; max < min refused.
    assert error_of(api.post(shapes, {"name": "shape1"})) == (
        400, "scaling_minimum and scaling_maximum cannot both be 0")
    ok(api.post(shapes, {"name": "shape2", "description": "This is a test description for shape2",
                         "scaling_minimum": 2, "scaling_maximum": 10}), 201)
    assert error_of(api.post(shapes, {"name": "shape4", "scaling_minimum": 4,
                                      "scaling_maximum": 3})) == (
        400, "scaling_maximum (3) must not be less than scaling_minimum (4)")
    assert error_of(api.post(shapes, {"name": "shape4", "scaling_minimum": -1,
                                      "scaling_maximum": 3}))[0] == 400
    # Unknown deployment; duplicate shape.
    assert error_of(api.post("/1.0/deployments/depNotFound/shapes", {
        "name": "shape1", "scaling_maximum": 1})) == (404, "Deployment not found")
    assert error_of(api.post(shapes, {"name": "shape2", "scaling_maximum": 1})) == (
        409, 'Shape "shape2" already exists')

    # From the YAML document of LXD's test.
    ok(api.post(shapes, {"name": "shape3", **yaml.safe_load(SHAPE3_YAML)}), 201)

    # Listing and showing.
    assert api.names(shapes) == ["shape2", "shape3"]
    assert sorted(ok(api.get(shapes))) == [
        f"{shapes}/shape2?project={lxd_project}", f"{shapes}/shape3?project={lxd_project}"]
    shape2 = ok(api.get(f"{shapes}/shape2"))
    assert (shape2["scaling_minimum"], shape2["scaling_maximum"], shape2["scaling_current"]) == (
        2, 10, 0)
    assert shape2["description"] == "This is a test description for shape2"
    assert set(ok(api.get("/1.0/deployments/dep1"))["deployment_shapes"]) == {"shape2", "shape3"}

    # Getting and setting a property and config keys.
    shape3 = ok(api.get(f"{shapes}/shape3"))
    assert shape3["scaling_minimum"] == 2
    assert shape3["config"]["user.foo"] == "blah"
    ok(api.patch(f"{shapes}/shape3", {"scaling_minimum": 3}))
    assert ok(api.get(f"{shapes}/shape3"))["scaling_minimum"] == 3
    ok(api.patch(f"{shapes}/shape3", {"config": {"user.baz": "1"}}))
    assert ok(api.get(f"{shapes}/shape3"))["config"] == {
        "user.foo": "blah", "user.bar": "blah2", "user.baz": "1"}
    # A set that breaks the bounds is refused and changes nothing.
    assert error_of(api.patch(f"{shapes}/shape3", {"scaling_maximum": 1}))[0] == 400
    assert ok(api.get(f"{shapes}/shape3"))["scaling_maximum"] == 8

    # Editing (PUT replaces): LXD's own keys `new.user.*` are not user keys here.
    refused = api.put(f"{shapes}/shape3", {
        "description": "x", "scaling_maximum": 8, "config": {"new.user.foo": "blah2"}})
    status, message = error_of(refused)
    assert status == 400 and "new.user.foo" in message
    ok(api.put(f"{shapes}/shape3", yaml.safe_load(SHAPE3_EDIT_YAML)))
    shape3 = ok(api.get(f"{shapes}/shape3"))
    assert shape3["description"] == "New description for shape3"
    assert shape3["config"] == {"user.new-foo": "blah2", "user.new-foo.bar": "blah3"}
    assert (shape3["scaling_minimum"], shape3["scaling_maximum"]) == (0, 8)

    # Renaming.
    ok(api.post(f"{shapes}/shape3", {"name": "new-shape"}), 201)
    assert api.names(shapes) == ["new-shape", "shape2"]
    assert error_of(api.post(f"{shapes}/new-shape", {"name": "shape2"})) == (
        409, 'Shape "shape2" already exists')

    # Deleting, and not-found errors.
    assert error_of(api.delete(f"{shapes}/shape1")) == (404, "Shape not found")
    assert error_of(api.delete("/1.0/deployments/depNotFound/shapes/shape1")) == (
        404, "Deployment not found")
    assert error_of(api.delete(f"{shapes}/shapeNotFound")) == (404, "Shape not found")
    ok(api.delete(f"{shapes}/shape2"))
    ok(api.delete(f"{shapes}/new-shape"))
    assert ok(api.get(shapes)) == []

    # From an image; a missing image refused.
    busybox = {"type": "image", "alias": "busybox"}
    ok(api.post(shapes, {"name": "shape1", "scaling_maximum": 1,
                         "instance_template": {"source": busybox}}), 201)
    assert ok(api.get(f"{shapes}/shape1"))["instance_template"]["source"] == busybox
    assert error_of(api.post(shapes, {
        "name": "shape9", "scaling_maximum": 1,
        "instance_template": {"source": {"type": "image", "alias": "wrongimage"}}})) == (
        400, f'Image with alias "wrongimage" not found in project "{lxd_project}"')

    # From a profile: its devices and config are copied.
    lxd.create_profile(lxd_project, "test-profile", TEST_PROFILE_YAML)
    profile_config = yaml.safe_load(TEST_PROFILE_YAML)["config"]
    ok(api.post(shapes, {"name": "shape2", "scaling_maximum": 1,
                         "from_profile": "test-profile"}), 201)
    template = ok(api.get(f"{shapes}/shape2"))["instance_template"]
    assert template["devices"] == TEST_PROFILE_DEVICES
    assert template["config"] == profile_config
    assert template["type"] == "container"

    # From an image and a profile, for virtual machines: busybox is a container image, so
    # the shape is refused when it is created (README, Decisions), not at its first launch.
    assert error_of(api.post(shapes, {
        "name": "complete-shape", "scaling_maximum": 1, "from_profile": "test-profile",
        "instance_template": {"type": "virtual-machine", "source": busybox}})) == (
        400, 'Image with alias "busybox" is a container image: a shape of type '
        "virtual-machine cannot launch it")
    assert error_of(api.get(f"{shapes}/complete-shape")) == (404, "Shape not found")

    for name in ("shape1", "shape2"):
        ok(api.delete(f"{shapes}/{name}"))
    ok(api.delete("/1.0/deployments/dep1"))
    assert error_of(api.get(f"{shapes}/shape1")) == (404, "Deployment not found")


def test_deployment_key(api: API, service):
    ok(api.post("/1.0/deployments", {"name": "dep1", **yaml.safe_load(DEP1_KEYS_YAML)}), 201)
    keys = "/1.0/deployments/dep1/keys"

    # A certificate trusted for deployments; found again by a short fingerprint.
    certificate = make_certificate("lxd.local")
    ok(service.http.post("/1.0/certificates", json={
        "name": "dep1-key1.crt", "type": "deployments", "certificate": certificate.pem}), 201)
    listed = ok(service.http.get("/1.0/certificates", params={"recursion": 1}))
    short = next(c["fingerprint"][:12] for c in listed if c["name"] == "dep1-key1.crt")
    full = ok(service.http.get(f"/1.0/certificates/{short}"))["fingerprint"]
    assert full == certificate.fingerprint

    # A key for it.
    ok(api.post(keys, {"name": "key1", "certificate_fingerprint": full, "role": "rw"}), 201)
    assert api.names(keys) == ["key1"]
    key1 = ok(api.get(f"{keys}/key1"))
    assert key1 == {"name": "key1", "description": "", "role": "rw",
                    "certificate_fingerprint": full}
    assert f"{keys}/key1?project={api.project}" in ok(api.get("/1.0/deployments/dep1"))["used_by"]

    # Role to ro; description set, then unset.
    ok(api.patch(f"{keys}/key1", {"role": "ro"}))
    assert ok(api.get(f"{keys}/key1"))["role"] == "ro"
    ok(api.patch(f"{keys}/key1", {"description": "This is a test description for key1"}))
    assert ok(api.get(f"{keys}/key1"))["description"] == "This is a test description for key1"
    ok(api.patch(f"{keys}/key1", {"description": ""}))
    assert ok(api.get(f"{keys}/key1"))["description"] == ""

    # Editing (PUT), role aliases.
    ok(api.put(f"{keys}/key1", {"description": "x", "role": "admin"}))
    assert ok(api.get(f"{keys}/key1"))["role"] == "rw"
    ok(api.put(f"{keys}/key1", yaml.safe_load(KEY1_EDIT_YAML)))
    key1 = ok(api.get(f"{keys}/key1"))
    assert (key1["description"], key1["role"]) == ("New description for key1", "ro")
    assert error_of(api.patch(f"{keys}/key1", {"role": "owner"}))[0] == 400

    # Renaming.
    ok(api.post(f"{keys}/key1", {"name": "new-key"}), 201)
    assert api.names(keys) == ["new-key"]
    assert error_of(api.get(f"{keys}/key1")) == (404, "Deployment key not found")

    # Refusals: unknown deployment, untrusted fingerprint, a client certificate.
    assert error_of(api.post("/1.0/deployments/depNotFound/keys", {
        "name": "key2", "certificate_fingerprint": full})) == (404, "Deployment not found")
    assert error_of(api.delete("/1.0/deployments/depNotFound/keys/key1")) == (
        404, "Deployment not found")
    stranger = make_certificate("stranger")
    assert error_of(api.post(keys, {"name": "key2",
                                    "certificate_fingerprint": stranger.fingerprint})) == (
        400, f'No trusted certificate has fingerprint "{stranger.fingerprint}"')
    admin = make_certificate("admin")
    ok(service.http.post("/1.0/certificates", json={
        "name": "admin", "type": "client", "certificate": admin.pem}), 201)
    status, message = error_of(api.post(keys, {"name": "key2",
                                               "certificate_fingerprint": admin.fingerprint}))
    assert status == 400 and 'a deployment key needs type "deployments"' in message

    # Deleting.
    ok(api.delete(f"{keys}/new-key"))
    assert ok(api.get(keys)) == []
    assert error_of(api.delete(f"{keys}/new-key")) == (404, "Deployment key not found")
    ok(api.delete("/1.0/deployments/dep1"))
    for fingerprint in (full, admin.fingerprint):
        ok(service.http.delete(f"/1.0/certificates/{fingerprint}"))
    assert error_of(service.http.get(f"/1.0/certificates/{full}")) == (
        404, "Certificate not found")

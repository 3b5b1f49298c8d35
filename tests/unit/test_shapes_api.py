"""Shapes through the REST API: bounds, templates checked against (fake) LXD, and LXD's
conventions (PUT/PATCH, ETag, rename, delete with children, recursion, projects).

Every refused request is also checked to have written nothing (conftest's `refused`)."""

from __future__ import annotations

import pytest

from lxd_deployments.lxd import Profile

from .conftest import create_deployment, create_shape, error_of, launch_instance

BASE = "/1.0/deployments/dep1/shapes"
BUSYBOX = {"source": {"type": "image", "alias": "busybox"}}


@pytest.fixture(autouse=True)
def dep1(api):
    assert create_deployment(api).status_code == 201


def shape_of(api, name: str = "web", project: str | None = None) -> dict:
    response = api.get(f"{BASE}/{name}", params={"project": project} if project else None)
    assert response.status_code == 200, response.json()
    return response.json()["metadata"]


# --- create and show --------------------------------------------------------------------


def test_create_then_show(api):
    response = create_shape(api, description="Front end", config={"user.tier": "1"},
                            scaling_minimum=1, scaling_maximum=3, instance_template=BUSYBOX)

    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/web"
    assert shape_of(api) == {
        "name": "web", "description": "Front end", "config": {"user.tier": "1"},
        "instance_template": {
            "type": "container", "source": {"type": "image", "alias": "busybox"},
            "config": {}, "devices": {}, "ephemeral": False, "instance_type": "",
            "architecture": "", "description": ""},
        "scaling_minimum": 1, "scaling_maximum": 3, "scaling_current": 0,
        "template_revision": 1, "instances_outdated": 0}


def test_minimum_may_be_zero_and_equal_bounds_are_fine(api):
    assert create_shape(api, "dep1", "a", scaling_minimum=0, scaling_maximum=1).status_code == 201
    assert create_shape(api, "dep1", "b", scaling_minimum=2, scaling_maximum=2).status_code == 201


@pytest.mark.parametrize(("bounds", "message"), [
    ({"scaling_minimum": 0, "scaling_maximum": 0},
     "scaling_minimum and scaling_maximum cannot both be 0"),
    ({}, "scaling_minimum and scaling_maximum cannot both be 0"),
    ({"scaling_minimum": 3, "scaling_maximum": 1},
     "scaling_maximum (1) must not be less than scaling_minimum (3)"),
    ({"scaling_minimum": -1, "scaling_maximum": 2},
     "scaling_minimum and scaling_maximum must not be negative"),
    ({"scaling_minimum": 0, "scaling_maximum": -1},
     "scaling_minimum and scaling_maximum must not be negative"),
    ({"scaling_minimum": "1", "scaling_maximum": 2},
     'Invalid value for "scaling_minimum": Input should be a valid integer'),
    ({"scaling_minimum": 1.5, "scaling_maximum": 2},
     'Invalid value for "scaling_minimum": Input should be a valid integer'),
    ({"scaling_minimum": 0, "scaling_maximum": True},
     'Invalid value for "scaling_maximum": Input should be a valid integer'),
    ({"scaling_minimum": 0, "scaling_maximum": None},
     'Invalid value for "scaling_maximum": Input should be a valid integer'),
])
def test_bad_bounds_are_refused(api, refused, bounds, message):
    body = {"name": "web", **bounds}
    refused(lambda a: a.post(BASE, json=body), 400, message)


def test_duplicate_name_is_409(api, refused):
    create_shape(api)
    refused(create_shape, 409, 'Shape "web" already exists')


def test_same_shape_name_in_two_deployments(api):
    create_deployment(api, "dep2")
    assert create_shape(api, "dep1").status_code == 201
    assert create_shape(api, "dep2").status_code == 201


def test_unknown_deployment_is_404(api, refused):
    refused(lambda a: create_shape(a, "nope"), 404, "Deployment not found")
    assert error_of(api.get("/1.0/deployments/nope/shapes")) == (404, "Deployment not found")


def test_unknown_shape_is_404(api):
    assert error_of(api.get(f"{BASE}/nope")) == (404, "Shape not found")
    assert error_of(api.patch(f"{BASE}/nope", json={})) == (404, "Shape not found")
    assert error_of(api.put(f"{BASE}/nope", json={})) == (404, "Shape not found")
    assert error_of(api.post(f"{BASE}/nope", json={"name": "x"})) == (404, "Shape not found")
    assert error_of(api.delete(f"{BASE}/nope")) == (404, "Shape not found")


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "1web"}, "Shape name must not start with a digit or a dash"),
    ({"name": ""}, "Shape name is required"),
    ({"config": {"limits.cpu": "1"}}, 'Unknown shape configuration key "limits.cpu"'),
    ({"surprise": 1}, 'Unknown field "surprise"'),
])
def test_bad_names_config_and_fields(api, refused, fields, message):
    body = {"name": "web", "scaling_maximum": 1, **fields}
    refused(lambda a: a.post(BASE, json=body), 400, message)


# --- templates checked against LXD ------------------------------------------------------


def test_missing_image_alias_is_refused(api, refused):
    template = {"source": {"type": "image", "alias": "nope"}}
    refused(lambda a: create_shape(a, instance_template=template), 400,
            'Image with alias "nope" not found in project "default"')


@pytest.mark.parametrize("fingerprint", ["a" * 64, "aaaaaaaa"])
def test_image_by_fingerprint_or_unique_prefix(api, fingerprint):
    template = {"source": {"type": "image", "fingerprint": fingerprint}}

    assert create_shape(api, instance_template=template).status_code == 201
    assert shape_of(api)["instance_template"]["source"] == template["source"]


def test_missing_image_fingerprint_is_refused(api, refused):
    template = {"source": {"type": "image", "fingerprint": "bbbb"}}
    refused(lambda a: create_shape(a, instance_template=template), 400,
            'Image with fingerprint "bbbb" not found in project "default"')


def test_remote_image_source_fully_given_is_not_looked_up_locally(api):
    source = {"type": "image", "alias": "debian/12", "server": "https://images.example",
              "protocol": "simplestreams", "mode": "pull"}

    assert create_shape(api, instance_template={"source": source}).status_code == 201
    assert shape_of(api)["instance_template"]["source"] == source


@pytest.mark.parametrize(("source", "message"), [
    ({"type": "image"}, 'Invalid value for "instance_template.source": an image source '
                        "needs an alias, a fingerprint or properties"),
    ({"type": "image", "alias": "debian/12", "server": "https://images.example"},
     'Invalid value for "instance_template.source": a remote image source needs a protocol '
     "(simplestreams or lxd)"),
    ({"type": "image", "alias": "debian/12", "server": "http://images.example",
      "protocol": "lxd"},
     'Invalid value for "instance_template.source": a remote image server must be an '
     "https:// URL"),
    ({"type": "image", "properties": {"os": "debian"}, "server": "https://images.example",
      "protocol": "simplestreams"},
     "A remote image source needs an alias or a fingerprint"),
    ({"type": "image", "properties": {"os": "debian"}},
     "A local image source needs an alias or a fingerprint"),
    # A protocol without a server is not a remote source: the alias must exist locally.
    ({"type": "image", "alias": "debian/12", "protocol": "simplestreams"},
     'Image with alias "debian/12" not found in project "default"'),
    ({"type": "image", "alias": "busybox", "protocol": "ftp"},
     'Invalid value for "instance_template.source.protocol": Input should be \'lxd\' or '
     "'simplestreams'"),
    ({"type": "copy", "alias": "busybox"},
     'Invalid value for "instance_template.source.type": Input should be \'image\' or '
     "'none'"),
])
def test_partial_or_bad_image_sources_are_refused(api, refused, source, message):
    refused(lambda a: create_shape(a, instance_template={"source": source}),
            400, message)


def test_from_profile_copies_config_and_devices(api, fake_lxd):
    fake_lxd.profiles[("default", "big")] = Profile(
        name="big", config={"limits.cpu": "2", "limits.memory": "1GiB"},
        devices={"eth0": {"type": "nic", "network": "lxdbr0"}})
    template = {**BUSYBOX, "config": {"limits.cpu": "4"},
                "devices": {"root": {"type": "disk", "path": "/", "pool": "fast"}}}

    assert create_shape(api, from_profile="big", instance_template=template).status_code == 201

    stored = shape_of(api)["instance_template"]
    # The template's own values win over the profile's.
    assert stored["config"] == {"limits.cpu": "4", "limits.memory": "1GiB"}
    assert stored["devices"] == {"eth0": {"type": "nic", "network": "lxdbr0"},
                                 "root": {"type": "disk", "path": "/", "pool": "fast"}}
    assert "profiles" not in stored
    assert "from_profile" not in shape_of(api)


@pytest.mark.parametrize("profile", ["nope", ""])
def test_from_missing_profile_is_refused(api, refused, profile):
    refused(lambda a: create_shape(a, from_profile=profile), 400,
            f'Profile "{profile}" not found in project "default"')


def test_template_profiles_must_exist(api, refused):
    template = {**BUSYBOX, "profiles": ["default", "gpu"]}
    refused(lambda a: create_shape(a, instance_template=template), 400,
            'Profile "gpu" not found in project "default"')

    template["profiles"] = ["default"]
    assert create_shape(api, instance_template=template).status_code == 201
    assert shape_of(api)["instance_template"]["profiles"] == ["default"]


def test_virtual_machine_type_is_kept(api, fake_lxd):
    fake_lxd.images["default"].add("busybox-vm")
    fake_lxd.image_types[("default", "busybox-vm")] = "virtual-machine"
    create_shape(api, instance_template={"source": {"type": "image", "alias": "busybox-vm"},
                                         "type": "virtual-machine"})
    assert shape_of(api)["instance_template"]["type"] == "virtual-machine"


def test_a_shape_whose_type_its_image_cannot_launch_is_refused(api):
    """A container image in a virtual-machine shape would only fail at the first launch:
    refused when the shape is created, and when it is changed."""
    response = api.post(BASE, json={"name": "web", "scaling_maximum": 1, "instance_template":
                                      {**BUSYBOX, "type": "virtual-machine"}})
    assert response.status_code == 400
    assert response.json()["error"] == ('Image with alias "busybox" is a container image: a '
                                         "shape of type virtual-machine cannot launch it")
    create_shape(api, instance_template=BUSYBOX)
    response = api.patch(f"{BASE}/web", json={"instance_template":
                                                {**BUSYBOX, "type": "virtual-machine"}})
    assert response.status_code == 400
    assert shape_of(api)["instance_template"]["type"] == "container"


@pytest.mark.parametrize(("template", "message"), [
    ({"sauce": 1}, 'Unknown field "instance_template.sauce"'),
    ({"source": {"type": "image", "alias": "busybox", "x": 1}},
     'Unknown field "instance_template.source.x"'),
    ({"type": "vm"}, 'Invalid value for "instance_template.type": Input should be '
                     "'container' or 'virtual-machine'"),
    ({"devices": {"eth0": {"mtu": 1500}}},
     'Invalid value for "instance_template.devices.eth0.mtu": Input should be a valid string'),
    ({"config": {"user.lxd-deployments.shape": "other"}},
     'Instance config key "user.lxd-deployments.shape" is reserved for the service'),
])
def test_bad_templates_are_refused(api, refused, template, message):
    refused(lambda a: create_shape(a, instance_template=template), 400, message)


# --- PUT, PATCH and ETags -----------------------------------------------------------------


@pytest.fixture
def web(api):
    response = create_shape(api, description="old", config={"user.a": "1", "user.b": "2"},
                            scaling_minimum=1, scaling_maximum=3, instance_template=BUSYBOX)
    assert response.status_code == 201


def test_put_replaces_every_writable_field(api, web):
    response = api.put(f"{BASE}/web", json={"config": {"user.a": "9"}, "scaling_maximum": 5})

    assert response.status_code == 200
    shown = shape_of(api)
    assert shown["config"] == {"user.a": "9"}
    assert shown["description"] == ""
    assert (shown["scaling_minimum"], shown["scaling_maximum"]) == (0, 5)
    assert shown["instance_template"]["source"] == {"type": "none"}


def test_patch_merges_and_leaves_empty_values_alone(api, web):
    response = api.patch(f"{BASE}/web", json={"config": {"user.a": "", "user.c": "3"},
                                              "scaling_maximum": 4})

    assert response.status_code == 200
    shown = shape_of(api)
    assert shown["config"] == {"user.a": "1", "user.b": "2", "user.c": "3"}
    assert shown["description"] == "old"
    assert (shown["scaling_minimum"], shown["scaling_maximum"]) == (1, 4)
    assert shown["instance_template"]["source"] == BUSYBOX["source"]


def test_patch_can_change_the_template(api, web, fake_lxd):
    fake_lxd.image_types[("default", "aaaa")] = "virtual-machine"
    template = {"source": {"type": "image", "fingerprint": "aaaa"}, "type": "virtual-machine"}
    assert api.patch(f"{BASE}/web", json={"instance_template": template}).status_code == 200
    shown = shape_of(api)["instance_template"]
    assert shown["type"] == "virtual-machine"
    assert shown["source"] == template["source"]


@pytest.mark.parametrize(("method", "body", "message"), [
    ("patch", {"scaling_minimum": 5},
     "scaling_maximum (3) must not be less than scaling_minimum (5)"),
    ("patch", {"scaling_minimum": 0, "scaling_maximum": 0},
     "scaling_minimum and scaling_maximum cannot both be 0"),
    ("put", {"description": "only this"},
     "scaling_minimum and scaling_maximum cannot both be 0"),
    ("patch", {"scaling_maximum": -2}, "scaling_minimum and scaling_maximum must not be negative"),
    ("patch", {"config": {"bad": "1"}}, 'Unknown shape configuration key "bad"'),
    ("put", {"config": {"bad": "1"}, "scaling_maximum": 1},
     'Unknown shape configuration key "bad"'),
    ("patch", {"name": "other"}, 'Unknown field "name"'),
    ("patch", {"scaling_current": 0}, 'Unknown field "scaling_current"'),
    ("patch", {"instance_template": {"source": {"type": "image", "alias": "nope"}}},
     'Image with alias "nope" not found in project "default"'),
    ("put", {"scaling_maximum": 1, "instance_template": {**BUSYBOX, "profiles": ["gpu"]}},
     'Profile "gpu" not found in project "default"'),
    ("patch", {"instance_template": {"config": {"user.lxd-deployments.service": "x"}}},
     'Instance config key "user.lxd-deployments.service" is reserved for the service'),
])
def test_bad_updates_are_refused(api, refused, web, method, body, message):
    refused(lambda a: getattr(a, method)(f"{BASE}/web", json=body), 400, message)


def test_etag_and_if_match(api, refused, web):
    etag = api.get(f"{BASE}/web").headers["ETag"]

    ok = api.patch(f"{BASE}/web", json={"description": "v2"}, headers={"If-Match": etag})
    assert ok.status_code == 200
    assert api.get(f"{BASE}/web").headers["ETag"] != etag
    for method in ("put", "patch"):
        refused(lambda a, m=method: getattr(a, m)(
            f"{BASE}/web", json={"description": "v3", "scaling_maximum": 3},
            headers={"If-Match": etag}),
            412, "ETag doesn't match: the object changed since it was read")
    assert shape_of(api)["description"] == "v2"


def test_etag_ignores_the_instance_count(api, web):
    etag = api.get(f"{BASE}/web").headers["ETag"]
    launch_instance(api, "dep1", "web", "c1")

    assert api.get(f"{BASE}/web").headers["ETag"] == etag
    assert api.patch(f"{BASE}/web", json={"description": "x"},
                     headers={"If-Match": etag}).status_code == 200


# --- rename and delete --------------------------------------------------------------------


def test_rename(api, web):
    response = api.post(f"{BASE}/web", json={"name": "front"})

    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/front"
    assert error_of(api.get(f"{BASE}/web")) == (404, "Shape not found")
    assert shape_of(api, "front")["description"] == "old"


def test_rename_onto_existing_is_409(api, refused, web):
    create_shape(api, name="db")
    refused(lambda a: a.post(f"{BASE}/web", json={"name": "db"}), 409,
            'Shape "db" already exists')


def test_rename_to_bad_name_is_400(api, refused, web):
    refused(lambda a: a.post(f"{BASE}/web", json={"name": "web_2"}), 400,
            "Shape name may only contain letters, digits and dashes")


def test_rename_with_instances_is_409(api, refused, web):
    launch_instance(api, "dep1", "web", "c1")
    refused(lambda a: a.post(f"{BASE}/web", json={"name": "front"}), 409,
            "Cannot rename a shape that has instances: their records name it")


def test_delete(api, web, core):
    assert api.delete(f"{BASE}/web").status_code == 200

    assert api.get(BASE).json()["metadata"] == []
    assert error_of(api.delete(f"{BASE}/web")) == (404, "Shape not found")
    with core.db.read() as conn:
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM deployments_shapes_config").scalar() == 0


def test_delete_with_instances_is_409_and_touches_nothing(api, refused, web, fake_lxd):
    launch_instance(api, "dep1", "web", "c1")

    refused(lambda a: a.delete(f"{BASE}/web"), 409,
            'Shape "web" still has 1 instance(s); delete them or use force')
    assert ("default", "c1") in fake_lxd.instances
    assert fake_lxd.deleted_instances == []


def test_forced_delete_deletes_the_instances_in_lxd_then_the_rows(api, web, fake_lxd, core):
    launch_instance(api, "dep1", "web", "c1")
    launch_instance(api, "dep1", "web", "c2")

    assert api.delete(f"{BASE}/web", params={"force": 1}).status_code == 200

    assert sorted(fake_lxd.deleted_instances) == [("default", "c1"), ("default", "c2")]
    assert fake_lxd.instances == {}
    with core.db.read() as conn:
        for table in ("deployments_shapes", "deployments_shapes_config",
                      "deployments_shapes_instances"):
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 0


def test_forced_delete_leaves_an_instance_that_is_not_ours(api, web, fake_lxd):
    launch_instance(api, "dep1", "web", "c1")
    # Someone replaced it in LXD by an instance of the same name without our keys.
    fake_lxd.add_instance("default", "c1", config={})

    assert api.delete(f"{BASE}/web", params={"force": 1}).status_code == 200

    assert fake_lxd.deleted_instances == []
    assert ("default", "c1") in fake_lxd.instances


def test_lowering_maximum_below_the_instance_count_is_409(api, refused, web):
    launch_instance(api, "dep1", "web", "c1")
    launch_instance(api, "dep1", "web", "c2")

    for method in ("put", "patch"):
        refused(lambda a, m=method: getattr(a, m)(
            f"{BASE}/web", json={"scaling_minimum": 0, "scaling_maximum": 1,
                                 "instance_template": BUSYBOX}), 409,
            "Shape has 2 instances: scaling_maximum cannot be set to 1; delete instances first")

    assert api.patch(f"{BASE}/web", json={"scaling_maximum": 2}).status_code == 200
    assert shape_of(api)["scaling_current"] == 2


# --- listing, recursion, used_by and projects --------------------------------------------


def test_list_gives_urls_and_recursion_gives_objects(api):
    create_shape(api, name="web")
    create_shape(api, name="db")

    assert api.get(BASE).json()["metadata"] == [f"{BASE}/db", f"{BASE}/web"]
    objects = api.get(BASE, params={"recursion": 1}).json()["metadata"]
    assert [s["name"] for s in objects] == ["db", "web"]
    assert objects[1] == shape_of(api, "web")


def test_deployment_shows_its_shapes_and_instances(api, web):
    launch_instance(api, "dep1", "web", "c1")

    deployment = api.get("/1.0/deployments/dep1").json()["metadata"]
    assert list(deployment["deployment_shapes"]) == ["web"]
    assert deployment["deployment_shapes"]["web"]["scaling_current"] == 1
    assert deployment["used_by"] == ["/1.0/instances/c1"]
    listed = api.get("/1.0/deployments", params={"recursion": 1}).json()["metadata"]
    assert listed == [deployment]


def test_shapes_in_another_project(api, fake_lxd):
    fake_lxd.projects.add("other")
    fake_lxd.images["other"] = {"alpine"}
    create_deployment(api, project="other")

    response = create_shape(api, project="other",
                            instance_template={"source": {"type": "image", "alias": "alpine"}})

    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/web?project=other"
    assert api.get(BASE, params={"project": "other"}).json()["metadata"] == [
        f"{BASE}/web?project=other"]
    assert shape_of(api, project="other")["name"] == "web"
    # The default project's deployment of the same name has no shapes.
    assert api.get(BASE).json()["metadata"] == []


def test_templates_are_checked_in_the_deployments_project(api, refused, fake_lxd):
    fake_lxd.projects.add("other")
    create_deployment(api, project="other")

    refused(lambda a: create_shape(a, project="other", instance_template=BUSYBOX),
            400, 'Image with alias "busybox" not found in project "other"')
    refused(lambda a: create_shape(a, project="other", from_profile="default"),
            400, 'Profile "default" not found in project "other"')


def test_unknown_project_is_404(api):
    assert error_of(create_shape(api, project="nope")) == (404, "Deployment not found")

"""Shape templates checked against a real LXD: images by alias, fingerprint and prefix,
remote sources, profiles of the deployment's project, `from_profile`, and VM templates.

The private LXD has the busybox image in its default project; test projects have
`features.images=false`, so they see it, and `features.profiles=true`, so profiles made in
a test's project exist only there.
"""

from __future__ import annotations

import pytest
import yaml

from .helpers import error_of, ok


@pytest.fixture
def deployment(service, lxd_project) -> str:
    response = service.http.post("/1.0/deployments", params={"project": lxd_project},
                                 json={"name": "web"})
    ok(response, 201)
    return "web"


def create_shape(service, project: str, template: dict, name: str = "s1", **fields):
    body = {"name": name, "scaling_minimum": 0, "scaling_maximum": 1,
            "instance_template": template, **fields}
    return service.http.post("/1.0/deployments/web/shapes", params={"project": project},
                             json=body)


def stored_template(service, project: str, name: str = "s1") -> dict:
    response = service.http.get(f"/1.0/deployments/web/shapes/{name}",
                                params={"project": project})
    return ok(response)["instance_template"]


def test_image_alias_accepted(service, lxd_project, deployment):
    template = {"source": {"type": "image", "alias": "busybox"}}
    ok(create_shape(service, lxd_project, template), 201)
    assert stored_template(service, lxd_project)["source"]["alias"] == "busybox"


def test_image_fingerprint_and_unique_prefix_accepted(service, lxd, lxd_project, deployment):
    fingerprint = lxd.images["busybox"]
    ok(create_shape(service, lxd_project, {"source": {"type": "image",
                                                      "fingerprint": fingerprint}}), 201)
    assert stored_template(service, lxd_project)["source"]["fingerprint"] == fingerprint
    prefix = fingerprint[:12]
    ok(create_shape(service, lxd_project, {"source": {"type": "image", "fingerprint": prefix}},
                    name="s2"), 201)
    assert stored_template(service, lxd_project, "s2")["source"]["fingerprint"] == prefix


def test_missing_image_refused(service, lxd, lxd_project, deployment):
    response = create_shape(service, lxd_project, {"source": {"type": "image",
                                                              "alias": "no-such-image"}})
    assert error_of(response) == (
        400, f'Image with alias "no-such-image" not found in project "{lxd_project}"')

    wrong = "0" * 64 if not lxd.images["busybox"].startswith("0") else "f" * 64
    response = create_shape(service, lxd_project, {"source": {"type": "image",
                                                              "fingerprint": wrong}})
    assert error_of(response) == (
        400, f'Image with fingerprint "{wrong}" not found in project "{lxd_project}"')

    # Nothing was stored.
    listed = ok(service.http.get("/1.0/deployments/web/shapes", params={"project": lxd_project}))
    assert listed == []


def test_image_deleted_from_lxd_is_then_refused(service, lxd, lxd_project, deployment):
    """The check asks LXD each time: an alias removed in LXD is refused at once."""
    lxd.lxc("image", "alias", "create", "short-lived", lxd.images["busybox"])
    ok(create_shape(service, lxd_project, {"source": {"type": "image", "alias": "short-lived"}}),
       201)
    lxd.lxc("image", "alias", "delete", "short-lived")
    response = create_shape(service, lxd_project,
                            {"source": {"type": "image", "alias": "short-lived"}}, name="s2")
    assert error_of(response)[0] == 400


def test_remote_image_source_fully_given_accepted(service, lxd_project, deployment):
    """A remote source is not checked against the remote (it may be offline here)."""
    source = {"type": "image", "mode": "pull", "server": "https://images.lxd.canonical.com",
              "protocol": "simplestreams", "alias": "debian/12"}
    ok(create_shape(service, lxd_project, {"source": source}), 201)
    assert stored_template(service, lxd_project)["source"] == source


@pytest.mark.parametrize(("source", "message"), [
    ({"type": "image", "server": "https://images.lxd.canonical.com", "alias": "debian/12"},
     'Invalid value for "instance_template.source": a remote image source needs a protocol '
     "(simplestreams or lxd)"),
    ({"type": "image", "server": "http://images.example", "protocol": "simplestreams",
      "alias": "debian/12"},
     'Invalid value for "instance_template.source": a remote image server must be an '
     "https:// URL"),
    ({"type": "image", "server": "https://images.lxd.canonical.com",
      "protocol": "simplestreams", "properties": {"os": "debian"}},
     "A remote image source needs an alias or a fingerprint"),
])
def test_remote_image_source_partially_given_refused(service, lxd_project, deployment,
                                                     source, message):
    response = create_shape(service, lxd_project, {"source": source})
    assert error_of(response) == (400, message)


def test_profile_must_exist_in_the_project(service, lxd, lxd_project, deployment):
    template = {"source": {"type": "image", "alias": "busybox"},
                "profiles": ["default", "extra"]}
    response = create_shape(service, lxd_project, template)
    assert error_of(response) == (400, f'Profile "extra" not found in project "{lxd_project}"')

    # A profile of that name in another project does not count.
    lxd.lxc("profile", "create", "extra")  # the default project
    try:
        assert error_of(create_shape(service, lxd_project, template))[0] == 400
        lxd.lxc("profile", "create", "extra", "--project", lxd_project)
        ok(create_shape(service, lxd_project, template), 201)
        assert stored_template(service, lxd_project)["profiles"] == ["default", "extra"]
    finally:
        lxd.lxc("profile", "delete", "extra")


def test_from_profile_copies_config_and_devices(service, lxd, lxd_project, deployment):
    profile = {
        "description": "small instances",
        "config": {"limits.memory": "256MiB", "user.role": "web"},
        "devices": {"data": {"type": "disk", "source": "/srv", "path": "/mnt"},
                    "root": {"type": "disk", "path": "/", "pool": "default", "size": "1GiB"}},
    }
    lxd.create_profile(lxd_project, "small", yaml.safe_dump(profile))

    # The template's own keys win over the profile's.
    template = {"source": {"type": "image", "alias": "busybox"},
                "config": {"user.role": "frontend"}}
    ok(create_shape(service, lxd_project, template, from_profile="small"), 201)
    stored = stored_template(service, lxd_project)
    assert stored["config"] == {"limits.memory": "256MiB", "user.role": "frontend"}
    assert stored["devices"] == profile["devices"]
    # The copy is a snapshot: from_profile itself is not stored.
    shape = ok(service.http.get("/1.0/deployments/web/shapes/s1",
                                params={"project": lxd_project}))
    assert "from_profile" not in shape

    response = create_shape(service, lxd_project, template, name="s2", from_profile="nope")
    assert error_of(response) == (400, f'Profile "nope" not found in project "{lxd_project}"')


def test_virtual_machine_type_kept(service, lxd_project, deployment):
    """A VM shape is stored as given when its image can be one (a remote image is
    checked at launch; the test LXD cannot run VMs, and nothing is launched); a local
    container image is refused for it when the shape is made."""
    local = {"type": "virtual-machine", "source": {"type": "image", "alias": "busybox"}}
    assert error_of(create_shape(service, lxd_project, local)) == (
        400, 'Image with alias "busybox" is a container image: a shape of type '
             "virtual-machine cannot launch it")
    remote = {"type": "virtual-machine", "source": {
        "type": "image", "mode": "pull", "server": "https://127.0.0.1:9",
        "protocol": "simplestreams", "alias": "vm"}}
    ok(create_shape(service, lxd_project, remote), 201)
    assert stored_template(service, lxd_project)["type"] == "virtual-machine"


def test_changed_template_checked_on_put_and_patch(service, lxd_project, deployment):
    ok(create_shape(service, lxd_project, {"source": {"type": "image", "alias": "busybox"}}),
       201)
    params = {"project": lxd_project}
    bad = {"source": {"type": "image", "alias": "gone"}}
    response = service.http.patch("/1.0/deployments/web/shapes/s1", params=params,
                                  json={"instance_template": bad})
    assert error_of(response) == (400, f'Image with alias "gone" not found in project '
                                       f'"{lxd_project}"')
    response = service.http.put("/1.0/deployments/web/shapes/s1", params=params,
                                json={"scaling_maximum": 1, "instance_template": bad})
    assert error_of(response)[0] == 400
    assert stored_template(service, lxd_project)["source"]["alias"] == "busybox"


def test_unknown_project_refused(service):
    response = service.http.post("/1.0/deployments", params={"project": "no-such-project"},
                                 json={"name": "web"})
    assert error_of(response) == (404, 'Project "no-such-project" not found')

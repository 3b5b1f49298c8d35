"""Deployments through the REST API: the scenarios of LXD's suite, and LXD's conventions."""

from __future__ import annotations

from .conftest import create_deployment as create
from .conftest import create_shape, error_of, launch_instance


def test_create_without_description_then_show(api):
    response = create(api)
    assert response.status_code == 201
    assert response.headers["Location"] == "/1.0/deployments/dep1"

    shown = api.get("/1.0/deployments/dep1").json()["metadata"]
    assert shown == {"name": "dep1", "description": "", "config": {},
                     "governor_webhook_url": "", "deployment_shapes": {}, "used_by": []}


def test_create_with_description_webhook_and_config(api):
    create(api, description="My app", governor_webhook_url="https://gov.example/hook",
           config={"user.team": "web"})

    shown = api.get("/1.0/deployments/dep1").json()["metadata"]
    assert shown["description"] == "My app"
    assert shown["governor_webhook_url"] == "https://gov.example/hook"
    assert shown["config"] == {"user.team": "web"}


def test_list_gives_urls_and_recursion_gives_objects(api):
    create(api, "dep1")
    create(api, "dep2")

    urls = api.get("/1.0/deployments").json()["metadata"]
    objects = api.get("/1.0/deployments", params={"recursion": 1}).json()["metadata"]

    assert urls == ["/1.0/deployments/dep1", "/1.0/deployments/dep2"]
    assert [d["name"] for d in objects] == ["dep1", "dep2"]


def test_envelope_is_lxds(api):
    body = api.get("/1.0/deployments").json()
    assert body["type"] == "sync"
    assert body["status"] == "Success"
    assert body["status_code"] == 200
    assert body["error_code"] == 0


def test_get_unknown_is_404_in_envelope(api):
    assert error_of(api.get("/1.0/deployments/nope")) == (404, "Deployment not found")


def test_duplicate_name_is_409(api):
    create(api)
    assert error_of(create(api)) == (409, 'Deployment "dep1" already exists')


def test_same_name_in_two_projects(api, fake_lxd):
    fake_lxd.projects.add("other")
    assert create(api, project="other").status_code == 201
    assert create(api).status_code == 201

    assert api.get("/1.0/deployments", params={"project": "other"}).json()["metadata"] == [
        "/1.0/deployments/dep1?project=other"]
    everything = api.get("/1.0/deployments", params={"all-projects": "true"}).json()["metadata"]
    assert sorted(everything) == ["/1.0/deployments/dep1",
                                  "/1.0/deployments/dep1?project=other"]


def test_unknown_project_is_404(api):
    assert error_of(create(api, project="nope")) == (404, 'Project "nope" not found')


def test_put_replaces_and_drops_absent_config(api):
    create(api, description="old", config={"user.a": "1", "user.b": "2"})

    response = api.put("/1.0/deployments/dep1", json={"config": {"user.a": "9"}})

    assert response.status_code == 200
    shown = api.get("/1.0/deployments/dep1").json()["metadata"]
    assert shown["config"] == {"user.a": "9"}
    assert shown["description"] == ""


def test_patch_merges_and_leaves_empty_values_alone(api):
    create(api, description="old", config={"user.a": "1", "user.b": "2"})

    api.patch("/1.0/deployments/dep1", json={"config": {"user.a": "", "user.c": "3"}})

    shown = api.get("/1.0/deployments/dep1").json()["metadata"]
    assert shown["config"] == {"user.a": "1", "user.b": "2", "user.c": "3"}
    assert shown["description"] == "old"


def test_etag_changes_and_if_match_is_honoured(api):
    create(api)
    etag = api.get("/1.0/deployments/dep1").headers["ETag"]

    ok = api.put("/1.0/deployments/dep1", json={"description": "v2"}, headers={"If-Match": etag})
    stale = api.put("/1.0/deployments/dep1", json={"description": "v3"},
                    headers={"If-Match": etag})

    assert ok.status_code == 200
    assert error_of(stale)[0] == 412
    assert api.get("/1.0/deployments/dep1").json()["metadata"]["description"] == "v2"
    assert api.get("/1.0/deployments/dep1").headers["ETag"] != etag


def test_rename(api):
    create(api, description="keep me")

    response = api.post("/1.0/deployments/dep1", json={"name": "dep2"})

    assert response.status_code == 201
    assert error_of(api.get("/1.0/deployments/dep1"))[0] == 404
    assert api.get("/1.0/deployments/dep2").json()["metadata"]["description"] == "keep me"


def test_rename_onto_existing_is_409_and_changes_nothing(api):
    create(api, "dep1")
    create(api, "dep2")

    assert error_of(api.post("/1.0/deployments/dep1", json={"name": "dep2"}))[0] == 409
    assert api.get("/1.0/deployments").json()["metadata"] == [
        "/1.0/deployments/dep1", "/1.0/deployments/dep2"]


def test_delete(api):
    create(api)
    assert api.delete("/1.0/deployments/dep1").status_code == 200
    assert api.get("/1.0/deployments").json()["metadata"] == []
    assert error_of(api.delete("/1.0/deployments/dep1")) == (404, "Deployment not found")


def test_delete_cascades_shapes_and_keys(api, core):
    from tests.certs import make_certificate

    create(api)
    api.post("/1.0/deployments/dep1/shapes", json={
        "name": "web", "scaling_minimum": 0, "scaling_maximum": 2})
    api.post("/1.0/deployments/dep1/keys", json={
        "name": "k1", "certificate": make_certificate().pem, "role": "rw"})

    api.delete("/1.0/deployments/dep1")

    with core.db.read() as conn:
        for table in ("deployments_shapes", "deployments_keys", "deployments_config"):
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 0


def test_delete_with_instances_is_409_and_touches_nothing(api, unchanged, fake_lxd):
    create(api)
    create_shape(api)
    launch_instance(api, "dep1", "web", "c1")

    with unchanged():
        assert error_of(api.delete("/1.0/deployments/dep1")) == (
            409, 'Deployment "dep1" still has 1 instance(s); delete them or use force')
    assert fake_lxd.deleted_instances == []


def test_forced_delete_deletes_the_instances_in_lxd_then_the_rows(api, core, fake_lxd):
    create(api)
    create_shape(api, name="web")
    create_shape(api, name="db")
    launch_instance(api, "dep1", "web", "c1")
    launch_instance(api, "dep1", "db", "c2")

    assert api.delete("/1.0/deployments/dep1", params={"force": 1}).status_code == 200

    assert sorted(fake_lxd.deleted_instances) == [("default", "c1"), ("default", "c2")]
    with core.db.read() as conn:
        for table in ("deployments", "deployments_shapes", "deployments_shapes_instances"):
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 0


def test_rename_with_instances_is_409(api, unchanged):
    create(api)
    create_shape(api)
    launch_instance(api, "dep1", "web", "c1")

    with unchanged():
        assert error_of(api.post("/1.0/deployments/dep1", json={"name": "dep2"})) == (
            409, "Cannot rename a deployment that has instances: their records name it")

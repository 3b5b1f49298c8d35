"""Bulk launches and "set the count" against the real service and a real LXD.

- 8 instances in one call on a shape of max 8: all running, in LXD and in the store.
- 9 on max 8: refused whole (409), nothing created in LXD, nothing reserved, no
  operation; with best effort: 8.
- A member that LXD refuses (its name taken in LXD, behind the service's back, after the
  batch was accepted) fails alone: the others run, its slot is released, the batch
  operation reports it.
- Set the count up, then down: the newest instances are deleted first.
- A crash while members are in flight: the startup reconcile releases their slots.
- The CLI: `shape instance launch --count`, `shape scale`.

This module's service creates two members at a time (`bulk_concurrency: 2`), so that two
launches stalled on an image server that never answers keep a batch queued behind them
for as long as a test needs.
"""

from __future__ import annotations

import pytest

from .helpers import (
    API,
    accepted,
    error_of,
    ok,
    operation_ids,
    ours,
    poll_until,
    succeeded,
    wait_operation,
)

BUSYBOX = {"type": "image", "alias": "busybox"}
DEPLOYMENT = "/1.0/deployments/dep"


@pytest.fixture(scope="module")
def service(services):
    return services(bulk_concurrency=2)


@pytest.fixture
def api(service, lxd_project) -> API:
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    return api


def make_shape(api: API, name: str = "web", minimum: int = 0, maximum: int = 8,
               source: dict | None = None) -> str:
    ok(api.post(f"{DEPLOYMENT}/shapes", {
        "name": name, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": source or BUSYBOX}}), 201)
    return f"{DEPLOYMENT}/shapes/{name}"


def records(service, project: str) -> list[tuple[str, str]]:
    """(name, status) of the project's records, in reservation order."""
    return service.query("SELECT instance_name, status FROM deployments_shapes_instances "
                         "WHERE project = ? ORDER BY id", project)


def ours_running(lxd, service, project: str) -> dict[str, str]:
    return {name: instance["status"] for name, instance in lxd.instances(project).items()
            if ours(instance, service.service_id, "dep", "web")}


def finished(api: API, operation: dict, timeout: float = 120) -> dict:
    return wait_operation(api.http, operation, timeout=timeout)


def test_eight_on_max_eight_all_run(service, lxd, lxd_project, api):
    shape = make_shape(api)
    batch = accepted(api.post(f"{shape}/instances", {"count": 8}))
    names = batch["metadata"]["instances"]
    assert (batch["metadata"]["requested"], batch["metadata"]["granted"]) == (8, 8)
    assert len(batch["metadata"]["operations"]) == 8
    final = finished(api, batch)
    assert (final["status"], final["err"]) == ("Success", ""), final
    assert ours_running(lxd, service, lxd_project) == dict.fromkeys(names, "Running")
    assert sorted(records(service, lxd_project)) == sorted((n, "ready") for n in names)
    assert ok(api.get(shape))["scaling_current"] == 8
    for url in final["metadata"]["operations"]:
        assert ok(api.http.get(url))["status"] == "Success"


def test_nine_on_max_eight_is_refused_whole_or_clamped_with_best_effort(service, lxd,
                                                                         lxd_project, api):
    shape = make_shape(api)
    before = operation_ids(api.http)
    assert error_of(api.post(f"{shape}/instances", {"count": 9})) == (
        409, 'Shape "web" has room for 8 more instance(s) within its scaling_maximum (8): '
             "cannot launch 9")
    assert lxd.states(lxd_project) == {}
    assert records(service, lxd_project) == []
    assert operation_ids(api.http) == before

    batch = accepted(api.post(f"{shape}/instances", {"count": 9, "best_effort": True}))
    assert (batch["metadata"]["requested"], batch["metadata"]["granted"]) == (9, 8)
    assert finished(api, batch)["status"] == "Success"
    assert set(lxd.states(lxd_project).values()) == {"RUNNING"}
    assert len(lxd.states(lxd_project)) == 8


def test_a_member_refused_by_lxd_fails_alone_and_releases_its_slot(service, lxd,
                                                                    lxd_project, api,
                                                                    stalled_image):
    shape = make_shape(api)
    slow = make_shape(api, "slow", maximum=2, source=stalled_image.source)
    # Two launches stalled in LXD take both bulk workers. One at a time: LXD 5.0 makes a
    # cache directory per image server on first use, and two creations racing to make it
    # fail one of them ("mkdir .../cache/<hash>: file exists").
    first = accepted(api.post(f"{slow}/instances", {"count": 1}))
    assert stalled_image.connected.wait(30), "LXD never asked the image server"
    second = accepted(api.post(f"{slow}/instances", {"count": 1}))
    members = first["metadata"]["operations"] + second["metadata"]["operations"]
    seen: list[tuple[str, str]] = []

    def both_running() -> bool:
        seen[:] = [(op["status"], op["err"]) for op in
                   (ok(api.http.get(url)) for url in members)]
        return all(status == "Running" for status, _ in seen)

    try:
        poll_until(both_running, 60, "both stalled members running")
    except AssertionError as err:  # say what the members were doing instead
        raise AssertionError(f"{err}; members (status, err): {seen}") from None
    # ... so this batch is accepted and queued behind them.
    names = [f"b{i}" for i in range(1, 9)]
    batch = accepted(api.post(f"{shape}/instances", {"instance_names": names}))
    assert all(ok(api.http.get(url))["status"] == "Pending"
               for url in batch["metadata"]["operations"])
    # Someone takes b5's name straight through LXD meanwhile.
    lxd.lxc("init", "busybox", "b5", "--project", lxd_project)
    stalled_image.release()

    assert [finished(api, op)["status"] for op in (first, second)] == ["Failure"] * 2
    final = finished(api, batch)
    assert final["status"] == "Failure", final
    assert final["err"].startswith("1 of 8 launches failed: b5: "), final["err"]
    results = final["metadata"]["results"]
    assert [n for n, r in results.items() if r["status"] != "Success"] == ["b5"]
    assert "already exists" in results["b5"]["err"]
    assert (final["metadata"]["succeeded"], final["metadata"]["failed"]) == (7, 1)
    # The others run; b5 is someone else's, untouched; its slot is free again.
    running = ours_running(lxd, service, lxd_project)
    assert running == {n: "Running" for n in names if n != "b5"}
    assert lxd.states(lxd_project)["b5"] == "STOPPED"
    assert records(service, lxd_project) == [(n, "ready") for n in names if n != "b5"]
    assert ok(api.get(shape))["scaling_current"] == 7
    succeeded(api.http, api.post(f"{shape}/instances", {"instance_name": "b9"}))
    assert ok(api.get(shape))["scaling_current"] == 8


def test_set_count_up_then_down_deletes_the_newest_first(service, lxd, lxd_project, api):
    shape = make_shape(api, minimum=1, maximum=6)
    up = accepted(api.put(f"{shape}/scale", {"count": 4}))
    assert up["metadata"]["scaling_count"] == {"requested": 4, "granted": 4, "previous": 0}
    assert finished(api, up)["status"] == "Success"
    assert finished(api, accepted(api.put(f"{shape}/scale", {"count": 6})))[
        "status"] == "Success"
    order = [name for name, _ in records(service, lxd_project)]
    assert len(order) == 6 and len(lxd.states(lxd_project)) == 6

    assert error_of(api.put(f"{shape}/scale", {"count": 7})) == (
        409, 'Shape "web" cannot have 7 instance(s): its bounds are 1 to 6')
    down = accepted(api.put(f"{shape}/scale", {"count": 3}))
    assert down["metadata"]["instances"] == order[:2:-1]  # the three newest, newest first
    assert finished(api, down)["status"] == "Success"
    assert records(service, lxd_project) == [(n, "ready") for n in order[:3]]
    assert lxd.states(lxd_project) == dict.fromkeys(order[:3], "RUNNING")

    floor = accepted(api.put(f"{shape}/scale", {"count": 0, "best_effort": True}))
    assert floor["metadata"]["scaling_count"] == {"requested": 0, "granted": 1,
                                                  "previous": 3}
    assert finished(api, floor)["status"] == "Success"
    assert lxd.states(lxd_project) == {order[0]: "RUNNING"}


def test_a_crash_during_a_batch_releases_its_members_at_restart(own_service, lxd, lxd_project,
                                                                stalled_image):
    api = API(own_service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    shape = make_shape(api, maximum=3, source=stalled_image.source)
    batch = accepted(api.post(f"{shape}/instances", {"count": 3}))
    assert stalled_image.connected.wait(30), "LXD never asked the image server"
    assert [s for _, s in records(own_service, lxd_project)] == ["pending"] * 3

    own_service.kill()
    stalled_image.release()  # LXD's creations fail: no instance ever existed
    own_service.restart()
    api = API(own_service.http, lxd_project)
    assert records(own_service, lxd_project) == []
    changes = ok(api.get(f"{DEPLOYMENT}/changes"))
    assert sorted((c["instance"], c["change"]) for c in changes) == sorted(
        (name, "released") for name in batch["metadata"]["instances"])
    assert ok(api.get(shape))["scaling_current"] == 0
    assert lxd.states(lxd_project) == {}


def test_cli_launch_count_and_scale(service, lxd, lxd_project, api, cli):
    make_shape(api, maximum=4)
    result = cli("shape", "instance", "launch", "dep", "web", "--count", "5", "--best-effort",
                 "--project", lxd_project)
    assert result.code == 0, result
    names = result.stdout.split()
    assert result.stderr == "Launching 4 instances (of 5 asked)... done\n"
    assert sorted(names) == sorted(lxd.states(lxd_project)) and len(names) == 4
    result = cli("shape", "instance", "launch", "dep", "web", "--count", "1",
                 "--project", lxd_project)
    assert (result.code, result.stderr) == (
        1, 'Error: Shape "web" is at its scaling_maximum (4): cannot launch another '
           "instance\n")
    result = cli("shape", "scale", "dep", "web", "1", "--project", lxd_project)
    assert (result.code, result.stderr) == (0, "Scaling dep/web to 1 instance... done\n")
    assert list(lxd.states(lxd_project)) == [names[0]]

"""A crash in the middle of launches: the service is SIGKILLed while governors launch
instances concurrently, then restarted on the same config and state dir, as systemd would.

After the restart LXD and the records agree: every instance in LXD that carries the
service's keys has a record, no record is left `pending` or `deleting` (no reservation is
stuck), `scaling_current` is the number of records and of instances in LXD, and the shape
takes exactly as many new launches as it has free slots.

A lost database is rebuilt from LXD the same way once its deployment and shape exist again.

The tests kill and restart this module's service (`service.kill()`, `service.restart()`).
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import httpx
import pytest
from websockets.sync.client import unix_connect

from .helpers import (
    API,
    accepted,
    error_of,
    ok,
    ours,
    poll_until,
    shape_records,
    wait_operation,
)

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

BUSYBOX = {"type": "image", "alias": "busybox"}
MAXIMUM = 12
LAUNCHERS = 6
KILL_AFTER_RECORDS = 7


def ours_in_lxd(lxd, project: str, service, shape: str) -> dict[str, str]:
    """LXD's instances carrying the service's keys for the shape: name -> status."""
    return {name: i["status"] for name, i in lxd.instances(project).items()
            if ours(i, service.service_id, "dep", shape)}


def lxd_operations_on(lxd, project: str) -> list[str]:
    """Descriptions of LXD's running operations on the project's instances."""
    with lxd.api() as lxd_api:
        answer = lxd_api.get("/1.0/operations", params={"project": project, "recursion": 1})
    running = (answer.json()["metadata"] or {}).get("running") or []
    return [op["description"] + " " + " ".join(op["resources"].get("instances") or [])
            for op in running]


class Launchers:
    """Threads that each launch instances one after another (waiting for each), on their
    own connections, until the service refuses or goes away."""

    def __init__(self, service, project: str, instances: str) -> None:
        self.service = service
        self.project = project
        self.instances = instances
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(LAUNCHERS)]

    def _note(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _run(self, index: int) -> None:
        with self.service.http_client(timeout=60.0) as http:
            for n in range(MAXIMUM):
                try:
                    answer = http.post(self.instances, params={"project": self.project},
                                       json={"instance_name": f"l{index}-{n}"})
                    if answer.status_code != 202:
                        self._note(str(answer.status_code))
                        return
                    final = wait_operation(http, answer.json()["metadata"])
                    self._note(final["status"])
                except (httpx.TransportError, AssertionError, ValueError):
                    self._note("cut")  # the service was killed under the request
                    return

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive()


def check_agreement(service, lxd, project: str, shape: str) -> dict[str, str]:
    """LXD and the records agree, and no reservation is stuck; the records."""
    recorded = shape_records(service, project, shape)
    in_lxd = ours_in_lxd(lxd, project, service, shape)
    assert set(recorded) == set(in_lxd), (recorded, in_lxd)
    assert set(recorded.values()) <= {"ready", "failed"}, recorded
    # `ready` runs; `failed` was created but never started (killed in between).
    for name, status in recorded.items():
        assert in_lxd[name] == ("Running" if status == "ready" else "Stopped"), (name, in_lxd)
    shown = ok(service.http.get(f"/1.0/deployments/dep/shapes/{shape}",
                                params={"project": project}))
    assert shown["scaling_current"] == len(recorded) == len(in_lxd)
    return recorded


def test_sigkill_during_concurrent_launches_then_restart(service, lxd, lxd_project,
                                                         stalled_image):
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    for shape, source in (("series", BUSYBOX), ("stalled", stalled_image.source)):
        ok(api.post("/1.0/deployments/dep/shapes", {
            "name": shape, "scaling_minimum": 0, "scaling_maximum": MAXIMUM,
            "instance_template": {"source": source}}), 201)
    instances = "/1.0/deployments/dep/shapes/series/instances"

    # A launch that is certainly in flight at the kill: LXD waits on the image server.
    accepted(api.post("/1.0/deployments/dep/shapes/stalled/instances",
                      {"instance_name": "stuck"}))
    assert stalled_image.connected.wait(30), "LXD never asked the image server"

    launchers = Launchers(service, lxd_project, instances)
    launchers.start()
    poll_until(lambda: len(shape_records(service, lxd_project, "series")) >= KILL_AFTER_RECORDS,
               30, f"{KILL_AFTER_RECORDS} launches accepted")
    service.kill()
    at_kill = shape_records(service, lxd_project, "series")
    launchers.join()
    print(f"at the kill: {Counter(at_kill.values())}; callers saw {dict(launchers.outcomes)}")
    assert shape_records(service, lxd_project, "stalled") == {"stuck": "pending"}

    # What the dead service asked of LXD still ends there (the stalled one aside): wait
    # for it, so that what LXD holds is final when the service looks at it again.
    poll_until(lambda: len(lxd_operations_on(lxd, lxd_project)) <= 1, 30,
               "LXD's operations for the killed service ended")
    service.restart()

    api = API(service.http, lxd_project)
    recorded = check_agreement(service, lxd, lxd_project, "series")
    assert len(recorded) >= KILL_AFTER_RECORDS - LAUNCHERS  # at most one in flight per caller
    # The launch that never reached LXD was released, and said so.
    assert shape_records(service, lxd_project, "stalled") == {}
    assert ok(api.get("/1.0/deployments/dep/shapes/stalled"))["scaling_current"] == 0
    changes = ok(api.get("/1.0/deployments/dep/changes"))
    by_instance = {c["instance"]: c for c in changes}
    print(f"after the restart: {Counter(recorded.values())}; changes "
          f"{Counter(c['change'] for c in changes)}")
    assert by_instance["stuck"]["change"] == "released", changes
    # Each launch cut by the kill was settled by the startup reconcile.
    for name, status in at_kill.items():
        if status == "pending":
            assert by_instance[name]["change"] in ("recovered", "released"), (name, changes)

    # No slot is stuck: the shape takes exactly its free slots, then refuses.
    free = MAXIMUM - len(recorded)
    refill = [accepted(api.post(instances, {"instance_name": f"after-{i}"}))
              for i in range(free)]
    assert error_of(api.post(instances, {"instance_name": "one-too-many"}))[0] == 409
    for operation in refill:
        assert wait_operation(api.http, operation)["status"] == "Success"
    recorded = check_agreement(service, lxd, lxd_project, "series")
    assert len(recorded) == MAXIMUM
    stalled_image.release()


def test_lost_database_rebuilt_from_lxd(service, lxd, lxd_project):
    """The database is lost with the service (killed, its file removed): once the
    deployment and the shape exist again, the instances are re-attached from LXD."""
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    shape_body = {"name": "kept", "scaling_minimum": 1, "scaling_maximum": 3,
                  "instance_template": {"source": BUSYBOX}}
    ok(api.post("/1.0/deployments/dep/shapes", shape_body), 201)
    operations = [accepted(api.post("/1.0/deployments/dep/shapes/kept/instances",
                                    {"instance_name": name})) for name in ("k1", "k2")]
    for operation in operations:
        assert wait_operation(api.http, operation)["status"] == "Success"
    lxd.lxc("stop", "k2", "--project", lxd_project, "--force")

    service.kill()
    service.lose_database()
    # A short reconcile period: the re-attachment comes from the periodic reconcile.
    service.restart(reconcile_interval=0.5)
    api = API(service.http, lxd_project)
    assert ok(api.get("/1.0/deployments")) == []
    # The instances were left alone meanwhile.
    assert lxd.states(lxd_project) == {"k1": "RUNNING", "k2": "STOPPED"}

    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    ok(api.post("/1.0/deployments/dep/shapes", shape_body), 201)
    poll_until(lambda: ok(api.get("/1.0/deployments/dep/shapes/kept"))["scaling_current"] == 2,
               5, "the instances re-attached")
    assert shape_records(service, lxd_project, "kept") == {"k1": "ready", "k2": "failed"}
    changes = ok(api.get("/1.0/deployments/dep/changes"))
    assert sorted((c["instance"], c["change"], c["detail"].get("status")) for c in changes) == [
        ("k1", "attached", "ready"), ("k2", "attached", "failed")]
    # They are the shape's again: the bounds hold over them.
    answer = api.delete("/1.0/deployments/dep/shapes/kept/instances/k1")
    assert wait_operation(api.http, accepted(answer))["status"] == "Success"
    assert error_of(api.delete("/1.0/deployments/dep/shapes/kept/instances/k2")) == (
        409, 'Shape "kept" is at its scaling_minimum (1): cannot delete an instance')
    assert lxd.states(lxd_project) == {"k2": "STOPPED"}


def test_a_lost_database_is_rebuilt_within_the_bound(service, lxd, lxd_project):
    """Two instances carry our keys for a shape whose maximum is now 1 (the database was
    lost, the shape made again with max 1): one is re-attached, the other is reported
    (change log and event) and left untouched in LXD."""
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    shape_body = {"name": "tight", "scaling_minimum": 0, "scaling_maximum": 2,
                  "instance_template": {"source": BUSYBOX}}
    ok(api.post("/1.0/deployments/dep/shapes", shape_body), 201)
    for name in ("t1", "t2"):
        answer = api.post("/1.0/deployments/dep/shapes/tight/instances", {"instance_name": name})
        assert wait_operation(api.http, accepted(answer))["status"] == "Success"
    before = {name: (i["status"], i["config"]) for name, i in lxd.instances(lxd_project).items()}

    service.kill()
    service.lose_database()
    service.restart(reconcile_interval=0.5)
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    events_url = f"ws://lxd/1.0/events?project={lxd_project}&deployment=dep"
    with unix_connect(str(service.socket_path), events_url) as stream:
        ok(api.post("/1.0/deployments/dep/shapes", {**shape_body, "scaling_maximum": 1}), 201)
        seen = []
        while not any(e["metadata"].get("change") == "not-attached" for e in seen):
            seen.append(json.loads(stream.recv(timeout=30)))
    event = next(e for e in seen if e["metadata"].get("change") == "not-attached")
    assert (event["type"], event["metadata"]["origin"]) == ("instance-changed", "recovery")
    changes = ok(api.get("/1.0/deployments/dep/changes"))
    verdicts = sorted((c["change"], c["instance"]) for c in changes)
    assert [v[0] for v in verdicts] == ["attached", "not-attached"], verdicts
    attached, left = verdicts[0][1], verdicts[1][1]
    assert event["metadata"]["instance"] == left
    assert shape_records(service, lxd_project, "tight") == {attached: "ready"}
    assert ok(api.get("/1.0/deployments/dep/shapes/tight"))["scaling_current"] == 1
    detail = next(c["detail"] for c in changes if c["change"] == "not-attached")
    assert detail["maximum"] == 1, detail
    # Left untouched in LXD: both still there, as they were.
    assert {name: (i["status"], i["config"])
            for name, i in lxd.instances(lxd_project).items()} == before
    # The bound holds over the re-attached one: no launch past the maximum.
    assert error_of(api.post("/1.0/deployments/dep/shapes/tight/instances",
                             {"instance_name": "t3"}))[0] == 409

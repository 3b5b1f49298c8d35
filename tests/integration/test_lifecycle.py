"""Lifecycle on the real LXD: terminating hooks (continue, abandon, timeout, a restart in
the middle), scale-in protection, template revisions and the termination policy.

The governor is a real webhook receiver (signed deliveries) and the real API; LXD is
asked directly what exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from lxd_deployments.client import SOCKET_ENV

from .conftest import CLI_TIMEOUT, Service, _service_env
from .helpers import API, accepted, error_of, ok, poll_until, shape_records, succeeded
from .receiver import Receiver

WAIT = 60.0
DEP = "/1.0/deployments/dep"


@pytest.fixture(scope="module")
def fast(services) -> Service:
    return services(events={"changes_poll_interval": 0.1})


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def deployment(api: API, receiver: Receiver | None = None) -> None:
    ok(api.post("/1.0/deployments", {"name": "dep",
                                     "governor_webhook_url": receiver.url if receiver else ""}),
       201)
    if receiver is not None:
        secret = ok(api.get(f"{DEP}/webhook-secret"))["secret"]
        receiver.secrets[(api.project, "dep")] = secret


def shape(api: API, name: str, config: dict | None = None, minimum: int = 0,
          maximum: int = 6, user: str = "1") -> None:
    ok(api.post(f"{DEP}/shapes", {
        "name": name, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "config": config or {},
        "instance_template": {"source": {"type": "image", "alias": "busybox"},
                              "config": {"user.v": user}}}), 201)


def launch(api: API, shp: str, *names: str) -> None:
    for name in names:
        succeeded(api.http, api.post(f"{DEP}/shapes/{shp}/instances",
                                     {"instance_name": name}))


def current(api: API, shp: str) -> int:
    return ok(api.get(f"{DEP}/shapes/{shp}"))["scaling_current"]


def lifecycle_of(api: API, shp: str, name: str) -> dict:
    return ok(api.get(f"{DEP}/shapes/{shp}/instances/{name}/lifecycle"))


def answer(api: API, shp: str, name: str, action: str):
    return api.post(f"{DEP}/shapes/{shp}/instances/{name}/lifecycle", {"action": action})


def running_op(api: API, op: dict) -> dict:
    """The operation after a short wait that must not see it end."""
    return ok(api.http.get(f"/1.0/operations/{op['id']}/wait", params={"timeout": 1},
                           timeout=15))


def final(api: API, op: dict) -> dict:
    return ok(api.http.get(f"/1.0/operations/{op['id']}/wait", params={"timeout": WAIT},
                           timeout=WAIT + 10))


def test_delete_waits_in_the_terminating_hook_until_the_governor_continues(
        fast, lxd, lxd_project, receiver):
    api = API(fast.http, lxd_project)
    deployment(api, receiver)
    shape(api, "web", {"lifecycle.terminate_timeout": "600"})
    launch(api, "web", "c1", "c2")

    op = accepted(api.delete(f"{DEP}/shapes/web/instances/c1"))
    (told,) = receiver.wait_for(lambda r: r.type == "instance-terminating"
                                and r.metadata.get("instance") == "c1", WAIT,
                                "instance-terminating of c1")
    assert told.verified
    assert told.metadata["timeout"] == 600
    assert told.metadata["lifecycle_url"].endswith("/instances/c1/lifecycle?project="
                                                   + lxd_project)

    # It stays, still counted, still running, while the governor drains it.
    assert running_op(api, op)["status"] == "Running"
    assert lifecycle_of(api, "web", "c1")["status"] == "terminating"
    assert current(api, "web") == 2
    assert lxd.instances(lxd_project)["c1"]["status"] == "Running"
    assert error_of(api.delete(f"{DEP}/shapes/web/instances/c1"))[0] == 409
    assert error_of(answer(api, "web", "c2", "continue"))[0] == 409  # c2 is in no hook
    assert error_of(answer(api, "web", "c1", "finish"))[0] == 400

    beat = ok(answer(api, "web", "c1", "heartbeat"))
    assert beat["status"] == "terminating"
    assert ok(answer(api, "web", "c1", "continue")) == {"status": "terminating",
                                                        "result": "continue"}
    ended = final(api, op)
    assert (ended["status"], ended["err"]) == ("Success", ""), ended
    assert ended["metadata"]["lifecycle_result"] == "continue"
    assert "c1" not in lxd.instances(lxd_project)
    assert shape_records(fast, lxd_project, "web") == {"c2": "ready"}
    (deleted,) = receiver.wait_for(lambda r: r.type == "instance-deleted"
                                   and r.metadata.get("instance") == "c1", WAIT,
                                   "instance-deleted of c1")
    assert deleted.metadata["lifecycle_result"] == "continue"


def test_abandon_removes_at_once_and_a_timeout_gives_the_default_result(fast, lxd,
                                                                         lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    shape(api, "slow", {"lifecycle.terminate_timeout": "600"})
    shape(api, "quick", {"lifecycle.terminate_timeout": "2",
                         "lifecycle.default_result": "abandon"})
    launch(api, "slow", "s1")
    launch(api, "quick", "q1")

    slow = accepted(api.delete(f"{DEP}/shapes/slow/instances/s1"))
    quick = accepted(api.delete(f"{DEP}/shapes/quick/instances/q1"))
    assert lifecycle_of(api, "quick", "q1")["status"] == "terminating"
    ok(answer(api, "slow", "s1", "abandon"))
    assert final(api, slow)["metadata"]["lifecycle_result"] == "abandon"
    timed_out = final(api, quick)  # nobody answers: the timeout's default result
    assert timed_out["status"] == "Success", timed_out
    assert timed_out["metadata"]["lifecycle_result"] == "abandon"
    assert not {"s1", "q1"} & set(lxd.instances(lxd_project))
    assert current(api, "slow") == current(api, "quick") == 0


def test_bad_lifecycle_options_are_refused(fast, lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    for config in ({"lifecycle.terminate_timeout": "soon"},
                   {"lifecycle.terminate_timeout": "999999"},
                   {"lifecycle.default_result": "maybe"},
                   {"scaling.termination_policy": "random"},
                   {"warm_pool.size": "1000"}):
        answer_ = api.post(f"{DEP}/shapes", {
            "name": "bad", "scaling_minimum": 0, "scaling_maximum": 2, "config": config,
            "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
        assert error_of(answer_)[0] == 400, config


def test_a_hook_survives_a_restart_in_the_middle(own_service, lxd, lxd_project):
    api = API(own_service.http, lxd_project)
    deployment(api)
    shape(api, "web", {"lifecycle.terminate_timeout": "600"})
    launch(api, "web", "c1", "c2")
    accepted(api.delete(f"{DEP}/shapes/web/instances/c1"))
    assert lifecycle_of(api, "web", "c1")["status"] == "terminating"

    own_service.kill()
    own_service.restart()
    api = API(own_service.http, lxd_project)
    assert lifecycle_of(api, "web", "c1")["status"] == "terminating"
    assert current(api, "web") == 2
    assert lxd.instances(lxd_project)["c1"]["status"] == "Running"

    ok(answer(api, "web", "c1", "continue"))
    poll_until(lambda: "c1" not in lxd.instances(lxd_project), WAIT,
               "c1 deleted after the restart")
    poll_until(lambda: shape_records(own_service, lxd_project, "web") == {"c2": "ready"},
               WAIT, "c1's record released")


def test_a_scale_in_and_a_forced_delete_go_through_the_hook(fast, lxd, lxd_project,
                                                            receiver):
    api = API(fast.http, lxd_project)
    deployment(api, receiver)
    shape(api, "web", {"lifecycle.terminate_timeout": "600"})
    launch(api, "web", "a", "b", "c")
    batch = accepted(api.put(f"{DEP}/shapes/web/scale", {"count": 2}))
    receiver.wait_for(lambda r: r.type == "instance-terminating"
                      and r.metadata.get("reason") == "scale-in", WAIT, "scale-in hook")
    assert shape_records(fast, lxd_project, "web")["c"] == "terminating"  # the newest
    assert running_op(api, batch)["status"] == "Running"
    ok(answer(api, "web", "c", "continue"))
    assert final(api, batch)["status"] == "Success"
    assert set(shape_records(fast, lxd_project, "web")) == {"a", "b"}

    # A forced delete of the shape waits for each hook too (the governor continues).
    def continue_all() -> bool:
        told = {r.metadata.get("instance") for r in receiver.of("dep")
                if r.type == "instance-terminating" and r.metadata.get("reason") == "forced"}
        for name in told & {"a", "b"}:
            answer(api, "web", name, "continue")
        return told >= {"a", "b"}

    answering = threading.Thread(target=poll_until, args=(continue_all, WAIT, "forced"))
    answering.start()
    ok(api.delete(f"{DEP}/shapes/web", force=1))
    answering.join(WAIT)
    assert not {"a", "b"} & set(lxd.instances(lxd_project))


def test_protection_refuses_scale_in_and_delete_until_lifted(fast, lxd, lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    shape(api, "web")
    launch(api, "web", "a", "b", "c")
    ok(api.put(f"{DEP}/shapes/web/instances/c/protection", {"protected": True}))
    assert lifecycle_of(api, "web", "c")["protected"] is True

    assert error_of(api.delete(f"{DEP}/shapes/web/instances/c"))[0] == 409
    # Scale-in passes over c (the newest, today's first choice).
    succeeded(api.http, api.put(f"{DEP}/shapes/web/scale", {"count": 1}))
    assert set(shape_records(fast, lxd_project, "web")) == {"c"}
    status, message = error_of(api.put(f"{DEP}/shapes/web/scale", {"count": 0}))
    assert status == 409 and "protected" in message, message

    ok(api.put(f"{DEP}/shapes/web/instances/c/protection", {"protected": False}))
    succeeded(api.http, api.delete(f"{DEP}/shapes/web/instances/c"))
    assert "c" not in lxd.instances(lxd_project)


def test_revisions_and_the_oldest_revision_policy(fast, lxd, lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    shape(api, "web", {"scaling.termination_policy": "oldest-revision"})
    launch(api, "web", "old1", "old2", "old3")
    shown = ok(api.get(f"{DEP}/shapes/web"))
    assert (shown["template_revision"], shown["instances_outdated"]) == (1, 0)

    ok(api.patch(f"{DEP}/shapes/web", {"description": "no template change"}))
    assert ok(api.get(f"{DEP}/shapes/web"))["template_revision"] == 1
    ok(api.patch(f"{DEP}/shapes/web", {"instance_template": {
        "source": {"type": "image", "alias": "busybox"}, "config": {"user.v": "2"}}}))
    shown = ok(api.get(f"{DEP}/shapes/web"))
    assert (shown["template_revision"], shown["instances_outdated"]) == (2, 3)
    launch(api, "web", "new1", "new2")
    assert lxd.instances(lxd_project)["new1"]["config"]["user.lxd-deployments.revision"] == "2"
    assert lifecycle_of(api, "web", "new1")["revision"] == 2
    assert lifecycle_of(api, "web", "old1")["outdated"] is True

    succeeded(api.http, api.put(f"{DEP}/shapes/web/scale", {"count": 3}))
    # The two oldest of revision 1 went, not the newest instances.
    assert set(shape_records(fast, lxd_project, "web")) == {"old3", "new1", "new2"}
    assert ok(api.get(f"{DEP}/shapes/web"))["instances_outdated"] == 1

    ok(api.patch(f"{DEP}/shapes/web", {"config": {"scaling.termination_policy": "oldest"}}))
    succeeded(api.http, api.put(f"{DEP}/shapes/web/scale", {"count": 2}))
    assert set(shape_records(fast, lxd_project, "web")) == {"new1", "new2"}


WARM_KEY = "user.lxd-deployments.warm-pool"


def warm_instances(lxd, project: str, shp: str) -> dict[str, dict]:
    """LXD's instances in the shape's warm pool (stopped, made in advance)."""
    return {name: i for name, i in lxd.instances(project).items()
            if (i.get("config") or {}).get(WARM_KEY) == shp}


def test_a_warm_pool_serves_launches_without_creating_then_refills(own_service, lxd,
                                                                     lxd_project):
    api = API(own_service.http, lxd_project)
    deployment(api)
    shape(api, "web", {"warm_pool.size": "3"})
    first = poll_until(lambda: (lambda p: p if len(p) == 3 else None)(
        warm_instances(lxd, lxd_project, "web")), WAIT, "a warm pool of 3")
    assert {i["status"] for i in first.values()} == {"Stopped"}
    assert current(api, "web") == 0  # not counted
    made_at = {i["created_at"] for i in first.values()}

    for name in ("c1", "c2", "c3"):
        done = succeeded(api.http, api.post(f"{DEP}/shapes/web/instances",
                                            {"instance_name": name}))
        assert done["metadata"].get("warm_pool") is True, done
    in_lxd = lxd.instances(lxd_project)
    for name in ("c1", "c2", "c3"):
        instance = in_lxd[name]
        assert instance["status"] == "Running"
        # No instance was created for the launches: each is one of the pool's, renamed.
        assert instance["created_at"] in made_at, (name, instance["created_at"], made_at)
        assert WARM_KEY not in instance["config"]
        assert instance["config"]["user.lxd-deployments.shape"] == "web"
    assert not set(first) & set(in_lxd)
    assert current(api, "web") == 3

    refilled = poll_until(lambda: (lambda p: p if len(p) == 3 else None)(
        warm_instances(lxd, lxd_project, "web")), WAIT, "the pool refilled")
    assert not set(refilled) & set(first)

    # A restart neither adopts the pool's instances nor loses them.
    own_service.restart()
    api = API(own_service.http, lxd_project)
    assert set(shape_records(own_service, lxd_project, "web")) == {"c1", "c2", "c3"}
    assert set(warm_instances(lxd, lxd_project, "web")) == set(refilled)

    # A new template revision recycles the pool.
    ok(api.patch(f"{DEP}/shapes/web", {"instance_template": {
        "source": {"type": "image", "alias": "busybox"}, "config": {"user.v": "2"}}}))
    poll_until(lambda: (lambda p: len(p) == 3 and not set(p) & set(refilled) and all(
        i["config"]["user.lxd-deployments.revision"] == "2" for i in p.values()))(
        warm_instances(lxd, lxd_project, "web")), WAIT, "the pool recycled to revision 2")

    # Deleting the shape (forced) takes its pool with it.
    ok(api.delete(f"{DEP}/shapes/web", force=1))
    assert lxd.instances(lxd_project) == {}


class Sampler:
    """Samples the shape's records (ready ones, all) in the store while a refresh runs."""

    def __init__(self, service: Service, project: str, shp: str) -> None:
        self.service, self.project, self.shape = service, project, shp
        self.ready: list[int] = []
        self.total: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            statuses = list(shape_records(self.service, self.project, self.shape).values())
            self.ready.append(statuses.count("ready"))
            self.total.append(len(statuses))
            self._stop.wait(0.02)  # a sampling period, not a wait for a condition

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def revisions(service: Service, project: str) -> list[int]:
    return sorted(r for (r,) in service.query(
        "SELECT i.revision FROM deployments_shapes_instances i JOIN deployments_shapes s "
        "ON s.id = i.shape_id JOIN deployments d ON d.id = s.deployment_id "
        "WHERE d.project = ?", project))


def new_revision(api: API, shp: str, value: str) -> None:
    ok(api.patch(f"{DEP}/shapes/{shp}", {"instance_template": {
        "source": {"type": "image", "alias": "busybox"}, "config": {"user.v": value}}}))


def test_a_refresh_keeps_the_healthy_floor_and_ends_on_the_new_revision(fast, lxd,
                                                                       lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    shape(api, "web", maximum=6)
    succeeded(api.http, api.put(f"{DEP}/shapes/web/scale", {"count": 6}))
    new_revision(api, "web", "2")
    assert ok(api.get(f"{DEP}/shapes/web"))["instances_outdated"] == 6

    with Sampler(fast, lxd_project, "web") as sampled:
        op = accepted(api.post(f"{DEP}/shapes/web/refresh",
                               {"min_healthy_percentage": 50, "max_surge": 0}))
        assert op["may_cancel"] is True
        done = final(api, op)
    assert (done["status"], done["err"]) == ("Success", ""), done
    assert done["metadata"]["replaced"] == 6 and done["metadata"]["floor"] == 3
    assert len(sampled.ready) > 10
    assert min(sampled.ready) >= 3, sampled.ready
    assert max(sampled.total) <= 6
    assert min(sampled.ready) < 6  # it did go down to the floor: the samples saw it
    shown = ok(api.get(f"{DEP}/shapes/web"))
    assert (shown["scaling_current"], shown["instances_outdated"]) == (6, 0)
    assert revisions(fast, lxd_project) == [2] * 6
    running = [i for i in lxd.instances(lxd_project).values() if i["status"] == "Running"]
    assert len(running) == 6


def test_a_refresh_with_surge_never_passes_maximum_plus_surge_and_can_be_cancelled(
        fast, lxd, lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    shape(api, "web", maximum=4)
    succeeded(api.http, api.put(f"{DEP}/shapes/web/scale", {"count": 4}))
    new_revision(api, "web", "2")
    with Sampler(fast, lxd_project, "web") as sampled:
        done = final(api, accepted(api.post(f"{DEP}/shapes/web/refresh",
                                            {"min_healthy_percentage": 100, "max_surge": 2})))
    assert done["status"] == "Success", done
    assert min(sampled.ready) >= 4 and max(sampled.total) <= 6, (sampled.ready, sampled.total)
    assert revisions(fast, lxd_project) == [2] * 4

    new_revision(api, "web", "3")
    op = accepted(api.post(f"{DEP}/shapes/web/refresh",
                           {"min_healthy_percentage": 100, "max_surge": 1}))
    cancelled = ok(api.delete(f"/1.0/operations/{op['id']}"))
    assert cancelled is None or isinstance(cancelled, dict)
    ended = final(api, op)
    assert ended["status"] == "Cancelled", ended
    assert ended["metadata"].get("replaced", 0) < 4
    # What it left is consistent: 4 instances, none in flight, the rest still outdated.
    records = shape_records(fast, lxd_project, "web")
    assert set(records.values()) == {"ready"} and len(records) == 4, records
    shown = ok(api.get(f"{DEP}/shapes/web"))
    assert shown["instances_outdated"] == 4 - ended["metadata"].get("replaced", 0)
    assert error_of(api.post(f"{DEP}/shapes/web/refresh",
                             {"min_healthy_percentage": 101}))[0] == 400


def run_cli(service: Service, project: str, *argv: str):
    env = _service_env()
    env[SOCKET_ENV] = str(service.socket_path)
    return subprocess.run([sys.executable, "-m", "lxd_deployments", *argv, "--project",
                           project], env=env, input="", capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)


def test_the_cli_refreshes_with_progress_and_protects(fast, lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    shape(api, "web", maximum=2)
    launch(api, "web", "a", "b")
    protected = run_cli(fast, lxd_project, "shape", "instance", "protect", "dep", "web", "b")
    assert protected.returncode == 0, protected.stderr
    shown = run_cli(fast, lxd_project, "shape", "instance", "lifecycle", "dep", "web", "b")
    assert "protected: true" in shown.stdout and "revision: 1" in shown.stdout, shown.stdout
    run_cli(fast, lxd_project, "shape", "instance", "unprotect", "dep", "web", "b")
    new_revision(api, "web", "2")

    result = run_cli(fast, lxd_project, "shape", "refresh", "dep", "web", "--min-healthy",
                     "50", "--max-surge", "1")
    assert result.returncode == 0, result.stderr
    assert "replaced 2/2 outdated" in result.stderr, result.stderr
    assert "2 instance(s) replaced" in result.stdout
    assert ok(api.get(f"{DEP}/shapes/web"))["instances_outdated"] == 0


def test_a_launch_waits_in_its_launching_hook_until_ready_or_abandoned(fast, lxd,
                                                                      lxd_project, receiver):
    api = API(fast.http, lxd_project)
    deployment(api, receiver)
    shape(api, "web", {"lifecycle.launch_timeout": "600"})
    op = accepted(api.post(f"{DEP}/shapes/web/instances", {"instance_name": "n1"}))
    (told,) = receiver.wait_for(lambda r: r.type == "instance-launching"
                                and r.metadata.get("instance") == "n1", WAIT,
                                "instance-launching of n1")
    assert told.metadata["lifecycle_url"].split("?")[0].endswith("/instances/n1/lifecycle")
    # Started, counted, not ready: the launch's operation still runs.
    assert lxd.instances(lxd_project)["n1"]["status"] == "Running"
    assert lifecycle_of(api, "web", "n1")["status"] == "launching"
    assert current(api, "web") == 1
    assert running_op(api, op)["status"] == "Running"
    assert error_of(api.delete(f"{DEP}/shapes/web/instances/n1"))[0] == 409
    ok(answer(api, "web", "n1", "continue"))
    ended = final(api, op)
    assert (ended["status"], ended["metadata"]["lifecycle_result"]) == ("Success", "continue")
    assert lifecycle_of(api, "web", "n1")["status"] == "ready"

    # Abandoned: the instance goes and the launch fails.
    op = accepted(api.post(f"{DEP}/shapes/web/instances", {"instance_name": "n2"}))
    poll_until(lambda: lifecycle_of(api, "web", "n2")["status"] == "launching", WAIT,
               "n2 launching")
    ok(answer(api, "web", "n2", "abandon"))
    ended = final(api, op)
    assert ended["status"] == "Failure" and "abandoned" in ended["err"], ended
    assert "n2" not in lxd.instances(lxd_project)
    assert shape_records(fast, lxd_project, "web") == {"n1": "ready"}


READY_AT = "tcp:127.0.0.1:8470"
# What an instance runs to say it is ready: busybox's own shell and wget, nothing else.
# `URL` (a lifecycle path) may be given to speak for another instance.
SAY_READY = ('. /etc/lxd-deployments-ready; busybox wget -q -O - '
             '--header "Authorization: Bearer $LXD_DEPLOYMENTS_READY_TOKEN" '
             '--header "Content-Type: application/json" '
             """--post-data '{"action": "continue"}' """
             '"http://127.0.0.1:8470${URL:-$LXD_DEPLOYMENTS_READY_URL}"')


def inside(lxd, project: str, name: str, script: str, **env: str
           ) -> subprocess.CompletedProcess[str]:
    """`script` run by busybox's shell inside the instance (as its own init would)."""
    settings = [f"--env={key}={value}" for key, value in env.items()]
    return lxd.lxc("exec", "--project", project, *settings, name, "--", "/bin/sh", "-c",
                   script, check=False)


def test_an_instance_says_ready_itself_on_the_in_instance_socket(fast, lxd, lxd_project,
                                                                 receiver):
    api = API(fast.http, lxd_project)
    deployment(api, receiver)
    shape(api, "web", {"lifecycle.launch_timeout": "600", "lifecycle.ready_socket": READY_AT})
    ops = {name: accepted(api.post(f"{DEP}/shapes/web/instances", {"instance_name": name}))
           for name in ("r1", "r2")}
    for name in ops:
        # (How many deliveries is the webhooks' matter: the first one is enough here.)
        told = receiver.wait_for(lambda r, n=name: r.type == "instance-launching"
                                 and r.metadata.get("instance") == n, WAIT,
                                 f"instance-launching of {name}")[0]
        assert told.metadata["ready_socket"] == READY_AT
        # The test image's init is a bare loop: bring the loopback up, as any real init
        # does (`ifup lo`), for the socket on 127.0.0.1.
        assert inside(lxd, lxd_project, name, "busybox ip link set lo up").returncode == 0
    # Its token is a root-only file in the instance, and nowhere in LXD's config.
    stat = inside(lxd, lxd_project, "r1", "busybox stat -c '%a %u' /etc/lxd-deployments-ready")
    assert stat.stdout.split() == ["600", "0"], stat
    token = inside(lxd, lxd_project, "r1", ". /etc/lxd-deployments-ready; "
                   "echo $LXD_DEPLOYMENTS_READY_TOKEN").stdout.strip()
    assert token.startswith("ldr1.")
    assert token not in str(lxd.instances(lxd_project)["r1"])

    # r2 cannot say r1 is ready, with its own token; nothing changed for r1.
    r1_url = f"{DEP}/shapes/web/instances/r1/lifecycle?project={lxd_project}"
    forged = inside(lxd, lxd_project, "r2", SAY_READY, URL=r1_url)
    assert forged.returncode != 0 and "403" in forged.stderr, forged
    assert lifecycle_of(api, "web", "r1")["status"] == "launching"
    assert running_op(api, ops["r1"])["status"] == "Running"

    said = inside(lxd, lxd_project, "r1", SAY_READY)
    assert said.returncode == 0, said
    assert json.loads(said.stdout)["metadata"] == {"status": "launching", "result": "continue"}
    ended = final(api, ops["r1"])
    assert (ended["status"], ended["metadata"]["lifecycle_result"]) == ("Success", "continue")
    assert lifecycle_of(api, "web", "r1")["status"] == "ready"
    # Used once: the same token again is refused, and r2's own still works.
    again = inside(lxd, lxd_project, "r1", SAY_READY)
    assert again.returncode != 0 and "401" in again.stderr, again
    assert inside(lxd, lxd_project, "r2", SAY_READY).returncode == 0
    assert final(api, ops["r2"])["status"] == "Success"
    assert shape_records(fast, lxd_project, "web") == {"r1": "ready", "r2": "ready"}
    # The service never logged a token.
    assert token.split(".")[2] not in fast.log()


def test_a_launching_hook_times_out_into_its_default_result(fast, lxd, lxd_project):
    api = API(fast.http, lxd_project)
    deployment(api)
    shape(api, "web", {"lifecycle.launch_timeout": "2"})
    done = succeeded(api.http, api.post(f"{DEP}/shapes/web/instances",
                                        {"instance_name": "t1"}))
    assert done["metadata"]["lifecycle_result"] == "continue"
    assert shape_records(fast, lxd_project, "web") == {"t1": "ready"}

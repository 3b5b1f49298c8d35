"""`workers: 2` on the real service: one supervisor, two worker processes accepting on
the same sockets, against the real LXD.

Both workers serve (each answer names its worker in `X-LXD-Deployments-Worker`, and
the log gives each worker's pid); a worker killed with SIGKILL is started again by the
supervisor while the other goes on serving, and no request fails more than once; the
shape's bound holds under concurrent launches made through both workers; SIGTERM stops
the supervisor and its workers cleanly."""

from __future__ import annotations

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.certs import make_certificate

from .helpers import ok, poll_until, shape_records

WORKER = "x-lxd-deployments-worker"
MAXIMUM = 3
LAUNCHES = 8
_STARTED = re.compile(r"as worker (\d+) \(pid (\d+),")


@pytest.fixture
def workers_service(services, lxd_project):
    """A service with two workers, a deployment with shape `front` (0..MAXIMUM) and a
    governor certificate with an `rw` key on it."""
    service = services(workers=2)
    params = {"project": lxd_project}
    ok(service.http.post("/1.0/deployments", params=params, json={"name": "dep"}), 201)
    ok(service.http.post("/1.0/deployments/dep/shapes", params=params, json={
        "name": "front", "scaling_minimum": 0, "scaling_maximum": MAXIMUM,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
    governor = make_certificate("workers-governor")
    ok(service.http.post("/1.0/deployments/dep/keys", params=params, json={
        "name": "scaler", "certificate": governor.pem, "role": "rw"}), 201)
    return service, governor


def worker_pids(service) -> dict[int, int]:
    """Worker index -> pid of its latest start, from the log."""
    return {int(index): int(pid) for index, pid in _STARTED.findall(service.log())}


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def connections_on_each_worker(service, governor, count: int = 2,
                               timeout: float = 60) -> dict[str, list[httpx.Client]]:
    """Kept-alive HTTPS connections, `count` on each worker (a connection stays with the
    worker that accepted it): new ones are opened until both have theirs."""
    found: dict[str, list[httpx.Client]] = {"0": [], "1": []}
    spare: list[httpx.Client] = []

    def enough() -> bool:
        client = service.https_client(governor, timeout=30)
        try:
            worker = client.get("/1.0").headers[WORKER]
        except httpx.TransportError:
            # The key was made through one worker; the other trusts its certificate
            # within `core.generations.POLL` seconds.
            client.close()
            return False
        (found[worker] if len(found[worker]) < count else spare).append(client)
        return all(len(clients) >= count for clients in found.values())

    try:
        poll_until(enough, timeout, "connections accepted by both workers", interval=0)
    finally:
        for client in spare:
            client.close()
    return found


def test_two_workers_serve_and_a_killed_one_is_started_again(workers_service, lxd_project):
    service, governor = workers_service
    pids = poll_until(lambda: len(worker_pids(service)) == 2 and worker_pids(service), 30,
                      "both workers started")
    assert len(set(pids.values())) == 2
    assert all(parent_of(pid) == service.process.pid for pid in pids.values())
    listing = "/1.0/deployments/dep/shapes/front/instances"
    params = {"project": lxd_project}
    clients = connections_on_each_worker(service, governor, count=1)
    try:
        for worker, (client,) in clients.items():
            answer = client.get(listing, params=params)
            assert answer.status_code == 200 and answer.headers[WORKER] == worker

        os.kill(pids[1], signal.SIGKILL)
        # Requests on new connections meanwhile: each fails at most once (a connection
        # the dying worker had accepted), its retry is answered.
        failed_twice: list[int] = []

        def request() -> str | None:
            for _attempt in range(2):
                try:
                    with service.https_client(governor, timeout=30) as fresh:
                        answer = fresh.get(listing, params=params)
                    if answer.status_code == 200:
                        return answer.headers[WORKER]
                except httpx.TransportError:
                    continue
            failed_twice.append(1)
            return None

        after: set[str | None] = set()

        def restarted() -> bool:
            worker = request()
            if worker_pids(service).get(1) != pids[1]:
                after.add(worker)  # answered since worker 1 started again
            return "1" in after

        poll_until(restarted, 60, "worker 1 started again and serving", interval=0)
        assert not failed_twice
        new_pid = worker_pids(service)[1]
        assert parent_of(new_pid) == service.process.pid
        assert worker_pids(service)[0] == pids[0]  # the other one went on
        assert f"worker 1 (pid {pids[1]}) died (killed by signal 9)" in service.log()
        # The connection kept on worker 0 still works.
        assert clients["0"][0].get(listing, params=params).status_code == 200
    finally:
        for kept in clients.values():
            for client in kept:
                client.close()


def test_the_bound_holds_under_launches_through_both_workers(workers_service, lxd, lxd_project):
    service, governor = workers_service
    clients = connections_on_each_worker(service, governor, count=LAUNCHES // 2)
    listing = "/1.0/deployments/dep/shapes/front/instances"
    params = {"project": lxd_project}
    spread = [(worker, client) for worker, kept in clients.items() for client in kept]

    def launch(item: tuple[int, tuple[str, httpx.Client]]) -> tuple[str, int]:
        index, (worker, client) = item
        answer = client.post(listing, params=params, json={"instance_name": f"w{index}"})
        assert answer.headers[WORKER] == worker
        return worker, answer.status_code

    try:
        with ThreadPoolExecutor(max_workers=LAUNCHES) as pool:
            results = list(pool.map(launch, enumerate(spread)))
    finally:
        for _worker, client in spread:
            client.close()
    statuses = sorted(status for _worker, status in results)
    assert statuses == [202] * MAXIMUM + [409] * (LAUNCHES - MAXIMUM), results
    assert {worker for worker, _status in results} == {"0", "1"}
    running = poll_until(
        lambda: (states := lxd.states(lxd_project)) and len(states) == MAXIMUM and
        all(state == "RUNNING" for state in states.values()) and states, 120,
        f"{MAXIMUM} instances running")
    assert len(running) == MAXIMUM
    records = poll_until(
        lambda: (found := shape_records(service, lxd_project, "front")) and
        set(found.values()) == {"ready"} and found, 60, "the records ready")
    assert sorted(records) == sorted(running)
    shape = ok(service.http.get("/1.0/deployments/dep/shapes/front", params=params))
    assert shape["scaling_current"] == MAXIMUM
    # No worker took another's own start for an outside change.
    assert "started in LXD" not in service.log()


def test_sigterm_stops_the_supervisor_and_its_workers(services):
    service = services(workers=2)
    pids = poll_until(lambda: len(worker_pids(service)) == 2 and worker_pids(service), 30,
                      "both workers started")
    service.stop()
    assert service.process.returncode == 0
    for pid in pids.values():  # reaped by the supervisor before it exited
        assert not os.path.exists(f"/proc/{pid}")
    assert not service.socket_path.exists()
    assert "Traceback" not in service.log()

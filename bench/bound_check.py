"""The cost of the scaling bound to a launch: the transaction that counts the shape's
instances and reserves the slot, timed inside the real service, with 1 and with 50
concurrent callers, in the same run, against a real LXD.

    sudo .venv/bin/python bench/bound_check.py [--callers 50] [--rounds 2] [--sequential 20]
                                               [--hammer-seconds 10] [--lxd-dir DIR]

What is timed. The bound is an invariant held by one SQLite write transaction per launch:
it takes the write lock, counts the shape's records, picks a location and inserts the
pending record, then commits (`core/reservation.py: reserve_launches`). That is what
the bound adds to a launch; with many callers it includes the wait for the lock behind
the other writers (other launches, and the operations settling their records), which is
the real cost of serialising the count. It is timed in the service process itself: the
service runs under `bench/_timed_service.py`, which wraps the store's write transactions
(and `launch` as a whole) with a timer and writes one line per measure. Timing from the
client could not isolate it: 50 concurrent requests wait far longer for the HTTP server
and its thread pool than for the bound.

The phases, one after the other on the same service and LXD:

1. `sequential`: one caller, N launches one after another (each waited), real LXD
   instances; also times each launch end to end (POST, then wait for the operation),
   to set the bound's share of a launch.
2. `concurrent`: C callers (50) launch one instance each at the same moment (a barrier),
   each then waits for its operation, `--rounds` times (deleted between rounds,
   untimed): C real instances being created at once, their records being settled
   while other launches take the lock.
3. `refused-1` and `refused-C`: the shape at its maximum; 1, then C, callers send
   launches in a loop for `--hammer-seconds`: every one is refused (409) after doing
   all the work of the check (an LXD lookup of the name, the transaction that counts),
   so the lock is contended all the time: the worst case.

Printed per phase: count, mean, median, p95 and max of the bound transaction, and the
synchronous part of the launch (`launch_sync`). Goal: the mean bound transaction at C
concurrent launches (`concurrent`) <= 2 ms. The last line is a JSON object:
{"bench": "bound_check", "callers": 50, "phases": {phase: {"bound_ms": {...},
"launch_sync_ms": {...}}}, "bound_share": ..., "goal_ms": 2.0, "met": ...}.
"""

from __future__ import annotations

import argparse
import os
import ssl
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

import _common
import httpx

from lxd_deployments.client import OperationFailed

DEPLOYMENT = "bench"
SHAPE = "bound"
GOAL_MS = 2.0
HERE = Path(__file__).resolve().parent
_PLAIN_HTTP = ssl.create_default_context()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=50,
                        help="concurrent callers (default 50)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of concurrent launches (default 2)")
    parser.add_argument("--sequential", type=int, default=20,
                        help="sequential launches of one caller (default 20)")
    parser.add_argument("--hammer-seconds", type=float, default=10.0,
                        help="seconds of refused launches, for 1 and for C callers "
                             "(default 10)")
    parser.add_argument("--placement-group", action="store_true",
                        help="the shape joins a placement group (spread, permissive, "
                             "max_per_member 1000: never refusing), so the transaction "
                             "also takes the group's lock and counts the group per member")
    _common.add_common_arguments(parser)
    return parser.parse_args()


class Timings:
    """The lines the timed service writes; `take()` returns those since the last take."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def take(self) -> dict[str, list[tuple[float, float, float]]]:
        """Per kind: (seconds, seconds waiting for the lock, CPU seconds) of each."""
        with open(self.path) as source:
            source.seek(self.offset)
            text = source.read()
        complete = text[:text.rfind("\n") + 1]
        self.offset += len(complete)
        taken: dict[str, list[tuple[float, float, float]]] = {}
        for line in complete.splitlines():
            kind, seconds, _outcome, wait, cpu = line.split()
            taken.setdefault(kind, []).append((float(seconds), float(wait), float(cpu)))
        return taken


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "mean": round(mean(values) * 1000, 3),
            "median": round(_common.median(values) * 1000, 3),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 3),
            "max": round(ordered[-1] * 1000, 3)}


def unix_client(socket_path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path), verify=_PLAIN_HTTP),
                        base_url="http://lxd", trust_env=False, timeout=300)


class Bench:
    def __init__(self, env_client, socket_path: Path, project: str, *,
                 placement_group: bool = False) -> None:
        self.api = env_client
        self.socket_path = socket_path
        self.project = project
        self.instances = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}/instances"
        self.shape = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}"
        self.api.post("/1.0/deployments", json={"name": DEPLOYMENT})
        config = {}
        if placement_group:
            self.api.post(f"/1.0/deployments/{DEPLOYMENT}/placement-groups", json={
                "name": "pg", "policy": "spread", "rigor": "permissive",
                "max_per_member": 1000})
            config = {"placement.group": "pg"}
        self.api.post(f"/1.0/deployments/{DEPLOYMENT}/shapes", json={
            "name": SHAPE, "scaling_minimum": 0, "scaling_maximum": 1, "config": config,
            "instance_template": {"source": {"type": "image", "alias": _common.BUSYBOX_ALIAS}}})

    def set_maximum(self, maximum: int) -> None:
        self.api.patch(self.shape, json={"scaling_maximum": maximum})

    def launch(self, http: httpx.Client, name: str) -> httpx.Response:
        return http.post(self.instances, params={"project": self.project},
                         json={"instance_name": name})

    def wait(self, http: httpx.Client, answer: httpx.Response) -> None:
        if answer.status_code != 202:
            raise RuntimeError(f"launch refused: {answer.status_code} {answer.text}")
        operation = answer.json()["metadata"]["id"]
        final = http.get(f"/1.0/operations/{operation}/wait",
                         params={"timeout": 300}).json()["metadata"]
        if final["status"] != "Success":
            raise RuntimeError(f"launch failed: {final}")

    def delete_all(self) -> None:
        names = [url.rsplit("/", 1)[-1].split("?")[0]
                 for url in self.api.get(self.instances).metadata]
        operations = {name: self.api.delete(f"{self.instances}/{name}").operation
                      for name in names}
        for name, operation in operations.items():
            try:
                self.api.wait_operation(operation)
            except OperationFailed as err:
                _common.log(f"deleting {name} failed ({err.message}); trying again")
                self.api.wait_operation(self.api.delete(f"{self.instances}/{name}").operation)

    # --- the phases ------------------------------------------------------------------

    def sequential(self, count: int) -> list[float]:
        self.set_maximum(count)
        times = []
        with unix_client(self.socket_path) as http:
            for n in range(count):
                start = time.perf_counter()
                self.wait(http, self.launch(http, f"seq-{n}"))
                times.append(time.perf_counter() - start)
        self.delete_all()
        return times

    def concurrent(self, callers: int, round_number: int) -> None:
        self.set_maximum(callers)
        barrier = threading.Barrier(callers)

        def caller(n: int) -> None:
            with unix_client(self.socket_path) as http:
                http.get("/1.0")  # connected before the barrier
                barrier.wait(timeout=120)
                self.wait(http, self.launch(http, f"c{round_number}-{n}"))

        with ThreadPoolExecutor(max_workers=callers) as pool:
            list(pool.map(caller, range(callers)))
        self.delete_all()

    def refused(self, callers: int, seconds: float) -> int:
        """Every launch refused at the bound, from `callers` callers for `seconds`."""
        barrier = threading.Barrier(callers)
        sent = [0] * callers

        def caller(n: int) -> None:
            with unix_client(self.socket_path) as http:
                http.get("/1.0")
                barrier.wait(timeout=120)
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    answer = self.launch(http, f"r{n}-{sent[n]}")
                    if answer.status_code != 409:
                        raise RuntimeError(f"expected 409: {answer.status_code} {answer.text}")
                    sent[n] += 1

        with ThreadPoolExecutor(max_workers=callers) as pool:
            list(pool.map(caller, range(callers)))
        return sum(sent)


def main() -> int:
    args = parse_args()
    if min(args.callers, args.rounds, args.sequential) < 1 or args.hammer_seconds <= 0:
        raise SystemExit("--callers, --rounds, --sequential and --hammer-seconds must be "
                         "positive")
    load_before = _common.loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-bound-"))
    timings = Timings(work / "timings.txt")
    timings.path.touch()
    os.environ["LXDD_BENCH_TIMINGS"] = str(timings.path)
    phases: dict[str, dict] = {}
    raw: dict[str, list[tuple[float, float, float]]] = {}  # bound transactions per phase
    with _common.lxd_daemon(args.lxd_dir) as lxd, \
            _common.lxd_project(lxd, args.pool) as project, \
            _common.service(lxd, log_level=args.service_log_level, keep_log=args.keep_log,
                            launcher=[str(HERE / "_timed_service.py")]) as svc:
        bench = Bench(svc.client.use_project(project), svc.socket_path, project,
                      placement_group=args.placement_group)

        def phase(name: str, run) -> None:
            timings.take()  # drop what came before (setup, clean-up)
            extra = run() or {}
            taken = timings.take()
            bound = taken.get("bound_txn", [])
            raw[name] = bound
            phases[name] = {
                "bound_ms": summary([s for s, _, _ in bound]),
                "bound_wait_ms": summary([w for _, w, _ in bound]),
                "bound_cpu_ms": summary([c for _, _, c in bound]),
                "launch_sync_ms": summary([s for s, _, _ in taken.get("launch_sync", [])]),
                # Who else held the write lock meanwhile, and for how long (ms in all).
                "other_txn": len(taken.get("other_txn", [])),
                "other_txn_hold_ms": round(sum(s - w for s, w, _ in taken.get("other_txn", []))
                                           * 1000, 1),
                "bound_hold_ms": round(sum(s - w for s, w, _ in bound) * 1000, 1),
                **extra, "loadavg": _common.loadavg()}
            _common.log(f"{name}: {phases[name]}")

        _common.log("warming up")
        bench.set_maximum(1)
        with unix_client(svc.socket_path) as http:
            bench.wait(http, bench.launch(http, "warm"))
        bench.delete_all()

        launch_times: list[float] = []

        def sequential() -> dict:
            launch_times.extend(bench.sequential(args.sequential))
            return {"launch_e2e_ms": summary(launch_times)}

        phase("sequential", sequential)
        for round_number in range(args.rounds):
            phase(f"concurrent-{round_number + 1}",
                  lambda r=round_number: bench.concurrent(args.callers, r))
        # At the bound: one instance, maximum 1.
        bench.set_maximum(1)
        with unix_client(svc.socket_path) as http:
            bench.wait(http, bench.launch(http, "full"))
        phase("refused-1", lambda: {"requests": bench.refused(1, args.hammer_seconds)})
        phase(f"refused-{args.callers}",
              lambda: {"requests": bench.refused(args.callers, args.hammer_seconds)})
        bench.delete_all()
    load_after = _common.loadavg()

    # The concurrent rounds together.
    rounds = [t for n, values in raw.items() if n.startswith("concurrent-") for t in values]
    concurrent = summary([s for s, _, _ in rounds])
    concurrent_wait = summary([w for _, w, _ in rounds])
    concurrent_cpu = summary([c for _, _, c in rounds])
    concurrent_mean = concurrent["mean"]
    sequential_mean = phases["sequential"]["bound_ms"]["mean"]
    launch_mean = mean(launch_times) * 1000
    met = concurrent_mean <= GOAL_MS

    print(f"{'phase':>14} {'n':>6} {'mean':>8} {'median':>8} {'p95':>8} {'max':>8} "
          f"{'wait':>8} {'cpu':>8} {'launch':>8}  (ms: the bound transaction; its mean "
          f"wait for the lock and CPU; launch_sync median)")
    for name, figures in phases.items():
        bound = figures["bound_ms"]
        print(f"{name:>14} {bound['n']:>6} {bound.get('mean', 0):>8.3f} "
              f"{bound.get('median', 0):>8.3f} {bound.get('p95', 0):>8.3f} "
              f"{bound.get('max', 0):>8.3f} {figures['bound_wait_ms'].get('mean', 0):>8.3f} "
              f"{figures['bound_cpu_ms'].get('mean', 0):>8.3f} "
              f"{figures['launch_sync_ms'].get('median', 0):>8.3f}  "
              f"(other writes: {figures['other_txn']}, holding {figures['other_txn_hold_ms']} "
              f"ms; load {figures['loadavg']})")
    print(f"a launch end to end (1 caller): {launch_mean:.1f} ms mean; the bound's share: "
          f"{sequential_mean / launch_mean:.2%}")
    print(f"bound transaction, mean: 1 caller {sequential_mean:.3f} ms, {args.callers} "
          f"concurrent launches {concurrent_mean:.3f} ms; goal <= {GOAL_MS} ms at "
          f"{args.callers}: {'met' if met else 'MISSED'}")
    print(f"load average before: {load_before}, after: {load_after}")
    _common.emit({
        "bench": "bound_check", "callers": args.callers, "rounds": args.rounds,
        "sequential": args.sequential, "hammer_seconds": args.hammer_seconds,
        "placement_group": args.placement_group,
        "bound_ms_1": sequential_mean, "bound_ms_concurrent": concurrent_mean,
        "bound_concurrent_ms": concurrent, "bound_concurrent_wait_ms": concurrent_wait,
        "bound_concurrent_cpu_ms": concurrent_cpu,
        "launch_e2e_ms": round(launch_mean, 2),
        "bound_share": round(sequential_mean / launch_mean, 5),
        "phases": phases, "goal_ms": GOAL_MS, "met": met,
        "loadavg_before": load_before, "loadavg_after": load_after,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

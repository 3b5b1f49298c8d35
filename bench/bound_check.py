"""The cost of the scaling bound to a launch, on SQLite and on PostgreSQL in the same
run: the transaction that counts the shape's instances and reserves the slot, timed
inside the real service, with C concurrent launches (50) against a real LXD.

    sudo .venv/bin/python bench/bound_check.py [--store both|sqlite|postgresql]
        [--callers 50] [--rounds 2] [--placement-group] [--lxd-dir DIR]

What is timed. The bound is an invariant held by one write transaction per launch: it
locks the shape (SQLite: the database's single write lock, taken at BEGIN; PostgreSQL:
the shape's row, `FOR NO KEY UPDATE`), counts the shape's records, picks a location and
inserts the pending record, then commits (`core/reservation.py: reserve_launches`).
With many callers it includes the wait for the lock: on SQLite behind every other
writer (other launches, the audit log, the operations settling their records), on
PostgreSQL behind the reservations of the same shape only. It is timed in the service
process itself (`bench/_timed_service.py` wraps the store's write transactions); timing
from the client could not isolate it.

The phases, for each store, on a service of its own (the same LXD, a fresh project; on
PostgreSQL a private server of tests/postgres.py, with PostgreSQL's durable defaults):

1. `shapes-C`: C callers each launch one instance into a shape of its own (C shapes,
   one each), all at the same moment (a barrier), each then waits for its operation,
   `--rounds` times (deleted between rounds, untimed): the reservations share no
   shape, so on PostgreSQL they need not wait for one another at all.
2. `shape-1`: C callers launch into one shape (maximum C) at once: every reservation
   waits for the one before it on either store. Its rate: reservations per second
   over the span from the first reservation's start to the last one's end.

Printed per store and phase: count, median (p50), mean, p95 and max of the bound
transaction, its wait before its first statement, and its CPU; then the ratios
PostgreSQL / SQLite. Goal: the p50 of the bound transaction at C concurrent launches
over C shapes <= 2 ms on PostgreSQL. The last line is a JSON object:
{"bench": "bound_check", "callers": 50, "stores": {store: {phase: {...}}},
"ratios": {...}, "goal_ms": 2.0, "met": ...}.
"""

from __future__ import annotations

import argparse
import os
import ssl
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

import _common
import httpx
from tests.postgres import PostgresServer

from lxd_deployments.client import OperationFailed

DEPLOYMENT = "bench"
GOAL_MS = 2.0
HERE = Path(__file__).resolve().parent
STORES = ("sqlite", "postgresql")
_PLAIN_HTTP = ssl.create_default_context()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=(*STORES, "both"), default="both",
                        help="the store(s) to measure, one after the other (default both)")
    parser.add_argument("--callers", type=int, default=50,
                        help="concurrent callers, and shapes of phase shapes-C (default 50)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of each phase (default 2)")
    parser.add_argument("--placement-group", action="store_true",
                        help="the shapes join a placement group (spread, permissive, "
                             "max_per_member 1000: never refusing), so the transaction "
                             "also takes the group's lock and counts the group per member")
    parser.add_argument("--postgresql-fsync", choices=("on", "off"), default="on",
                        help="the private PostgreSQL server's fsync and synchronous_commit "
                             "(default on: its durable defaults; off: to see what the "
                             "commits' flushes cost)")
    _common.add_common_arguments(parser)
    return parser.parse_args()


Timing = tuple[float, float, float, float]  # seconds, wait, CPU, start


class Timings:
    """The lines the timed service writes; `take()` returns those since the last take."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def take(self) -> dict[str, list[Timing]]:
        """Per kind: (seconds, seconds before the first statement, CPU seconds, start)."""
        with open(self.path) as source:
            source.seek(self.offset)
            text = source.read()
        complete = text[:text.rfind("\n") + 1]
        self.offset += len(complete)
        taken: dict[str, list[Timing]] = {}
        for line in complete.splitlines():
            kind, seconds, _outcome, wait, cpu, start = line.split()
            taken.setdefault(kind, []).append((float(seconds), float(wait), float(cpu),
                                               float(start)))
        return taken


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "median": round(_common.median(values) * 1000, 3),
            "mean": round(mean(values) * 1000, 3),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 3),
            "max": round(ordered[-1] * 1000, 3)}


def unix_client(socket_path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path), verify=_PLAIN_HTTP),
                        base_url="http://lxd", trust_env=False, timeout=300)


class Bench:
    """One deployment with `shapes` shapes (`s0`, `s1`, ...), each of maximum 1."""

    def __init__(self, env_client, socket_path: Path, project: str, shapes: int, *,
                 placement_group: bool = False) -> None:
        self.api = env_client
        self.socket_path = socket_path
        self.project = project
        self.shapes = [f"s{n}" for n in range(shapes)]
        self.api.post("/1.0/deployments", json={"name": DEPLOYMENT})
        config = {}
        if placement_group:
            self.api.post(f"/1.0/deployments/{DEPLOYMENT}/placement-groups", json={
                "name": "pg", "policy": "spread", "rigor": "permissive",
                "max_per_member": 1000})
            config = {"placement.group": "pg"}
        for shape in self.shapes:
            self.api.post(f"/1.0/deployments/{DEPLOYMENT}/shapes", json={
                "name": shape, "scaling_minimum": 0, "scaling_maximum": 1, "config": config,
                "instance_template": {"source": {"type": "image",
                                                 "alias": _common.BUSYBOX_ALIAS}}})

    def instances(self, shape: str) -> str:
        return f"/1.0/deployments/{DEPLOYMENT}/shapes/{shape}/instances"

    def set_maximum(self, shape: str, maximum: int) -> None:
        self.api.patch(f"/1.0/deployments/{DEPLOYMENT}/shapes/{shape}",
                       json={"scaling_maximum": maximum})

    def launch(self, http: httpx.Client, shape: str, name: str) -> None:
        answer = http.post(self.instances(shape), params={"project": self.project},
                           json={"instance_name": name})
        if answer.status_code != 202:
            raise RuntimeError(f"launch refused: {answer.status_code} {answer.text}")
        operation = answer.json()["metadata"]["id"]
        final = http.get(f"/1.0/operations/{operation}/wait",
                         params={"timeout": 300}).json()["metadata"]
        if final["status"] != "Success":
            raise RuntimeError(f"launch failed: {final}")

    def delete_all(self, shapes: list[str]) -> None:
        operations = {}
        for shape in shapes:
            for url in self.api.get(self.instances(shape)).metadata:
                name = url.rsplit("/", 1)[-1].split("?")[0]
                operations[(shape, name)] = self.api.delete(
                    f"{self.instances(shape)}/{name}").operation
        for (shape, name), operation in operations.items():
            try:
                self.api.wait_operation(operation)
            except OperationFailed as err:
                _common.log(f"deleting {name} failed ({err.message}); trying again")
                self.api.wait_operation(
                    self.api.delete(f"{self.instances(shape)}/{name}").operation)

    def at_once(self, targets: list[tuple[str, str]]) -> None:
        """Launch each (shape, name) from a caller of its own, all at the same moment."""
        barrier = threading.Barrier(len(targets))

        def caller(target: tuple[str, str]) -> None:
            with unix_client(self.socket_path) as http:
                http.get("/1.0")  # connected before the barrier
                barrier.wait(timeout=120)
                self.launch(http, *target)

        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            list(pool.map(caller, targets))

    def shapes_at_once(self, round_number: int) -> None:
        self.at_once([(shape, f"m{round_number}-{n}") for n, shape in enumerate(self.shapes)])
        self.delete_all(self.shapes)

    def one_shape_at_once(self, callers: int, round_number: int) -> None:
        shape = self.shapes[0]
        self.set_maximum(shape, callers)
        self.at_once([(shape, f"o{round_number}-{n}") for n in range(callers)])
        self.delete_all([shape])
        self.set_maximum(shape, 1)


def rate(bound: list[Timing]) -> float:
    """Reservations per second of one round: from the first one's start to the last one's
    end."""
    span = (max(s + t for s, _, _, t in bound) - min(t for _, _, _, t in bound)) if bound else 0
    return len(bound) / span if span else 0.0


def figures(bound: list[Timing], others: list[Timing], rates: list[float]) -> dict:
    """What a phase's bound transactions (and the other writes meanwhile) show; its
    rate is the mean of its rounds' `rate`."""
    return {"bound_ms": summary([s for s, _, _, _ in bound]),
            "bound_wait_ms": summary([w for _, w, _, _ in bound]),
            "bound_cpu_ms": summary([c for _, _, c, _ in bound]),
            "reservations_per_s": round(mean(rates), 1) if rates else 0.0,
            "other_txn": len(others), "loadavg": _common.loadavg()}


def measure(store: str, args: argparse.Namespace, lxd, postgres: PostgresServer | None
            ) -> dict[str, dict]:
    """Both phases on a fresh service whose store is `store`."""
    work = Path(tempfile.mkdtemp(prefix=f"bench-bound-{store}-"))
    timings = Timings(work / "timings.txt")
    timings.path.touch()
    os.environ["LXDD_BENCH_TIMINGS"] = str(timings.path)
    extra = {}
    database = None
    if store == "postgresql":
        assert postgres is not None
        database = postgres.create_database()
        extra = database.service_config()
    raw: dict[str, list[Timing]] = {}
    others: dict[str, list[Timing]] = {}
    rates: dict[str, list[float]] = {}
    try:
        with _common.lxd_project(lxd, args.pool) as project, \
                _common.service(lxd, log_level=args.service_log_level, keep_log=args.keep_log,
                                launcher=[str(HERE / "_timed_service.py")],
                                extra_config=extra) as svc:
            bench = Bench(svc.client.use_project(project), svc.socket_path, project,
                          args.callers, placement_group=args.placement_group)

            def phase(name: str, run) -> None:
                timings.take()  # drop what came before (setup, clean-up)
                run()
                taken = timings.take()
                bound = taken.get("bound_txn", [])
                raw.setdefault(name, []).extend(bound)
                others.setdefault(name, []).extend(taken.get("other_txn", []))
                rates.setdefault(name, []).append(rate(bound))
                _common.log(f"{store} {name}: {figures(bound, [], [rate(bound)])}")

            _common.log(f"{store}: warming up")
            with unix_client(svc.socket_path) as http:
                bench.launch(http, bench.shapes[0], "warm")
            bench.delete_all(bench.shapes[:1])
            for round_number in range(args.rounds):
                phase(f"shapes-{args.callers}",
                      lambda r=round_number: bench.shapes_at_once(r))
            for round_number in range(args.rounds):
                phase("shape-1", lambda r=round_number: bench.one_shape_at_once(args.callers,
                                                                                 r))
    finally:
        if database is not None and postgres is not None:
            postgres.drop_database(database.name)
    return {name: figures(bound, others[name], rates[name]) for name, bound in raw.items()}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> int:
    args = parse_args()
    if min(args.callers, args.rounds) < 1:
        raise SystemExit("--callers and --rounds must be positive")
    stores = list(STORES) if args.store == "both" else [args.store]
    load_before = _common.loadavg()
    results: dict[str, dict[str, dict]] = {}
    postgres = (PostgresServer.start(durable=args.postgresql_fsync == "on")
                if "postgresql" in stores else None)
    try:
        with _common.lxd_daemon(args.lxd_dir) as lxd:
            for store in stores:
                results[store] = measure(store, args, lxd, postgres)
    finally:
        if postgres is not None:
            postgres.stop()
    load_after = _common.loadavg()

    many = f"shapes-{args.callers}"
    print(f"{'store':>10} {'phase':>10} {'n':>5} {'p50':>8} {'mean':>8} {'p95':>8} "
          f"{'max':>8} {'wait':>8} {'cpu':>8} {'resv/s':>8}  (ms: the bound transaction; "
          "wait: its mean wait before its first statement; cpu: its mean CPU)")
    for store, phases in results.items():
        for name, f in phases.items():
            b = f["bound_ms"]
            print(f"{store:>10} {name:>10} {b['n']:>5} {b.get('median', 0):>8.3f} "
                  f"{b.get('mean', 0):>8.3f} {b.get('p95', 0):>8.3f} {b.get('max', 0):>8.3f} "
                  f"{f['bound_wait_ms'].get('mean', 0):>8.3f} "
                  f"{f['bound_cpu_ms'].get('mean', 0):>8.3f} {f['reservations_per_s']:>8.1f}"
                  f"  (other writes: {f['other_txn']}; load {f['loadavg']})")
    ratios = {}
    if len(results) == 2:
        pg, lite = results["postgresql"], results["sqlite"]
        ratios = {
            f"{many}_p50": ratio(pg[many]["bound_ms"].get("median"),
                                 lite[many]["bound_ms"].get("median")),
            f"{many}_mean": ratio(pg[many]["bound_ms"].get("mean"),
                                  lite[many]["bound_ms"].get("mean")),
            "shape-1_p50": ratio(pg["shape-1"]["bound_ms"].get("median"),
                                 lite["shape-1"]["bound_ms"].get("median")),
            "shape-1_reservations_per_s": ratio(pg["shape-1"]["reservations_per_s"],
                                                lite["shape-1"]["reservations_per_s"]),
        }
        print("PostgreSQL / SQLite: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    met = None
    if "postgresql" in results:
        p50 = results["postgresql"][many]["bound_ms"].get("median", float("inf"))
        met = p50 <= GOAL_MS
        print(f"PostgreSQL bound transaction p50 at {args.callers} launches over "
              f"{args.callers} shapes: {p50:.3f} ms; goal <= {GOAL_MS} ms: "
              f"{'met' if met else 'MISSED'}")
    print(f"load average before: {load_before}, after: {load_after}")
    _common.emit({"bench": "bound_check", "callers": args.callers, "rounds": args.rounds,
                  "placement_group": args.placement_group, "stores": results,
                  "ratios": ratios, "goal_ms": GOAL_MS, "met": met,
                  "loadavg_before": load_before, "loadavg_after": load_after})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Listing throughput: requests per second of a governor's URL listing over HTTPS against
LXD's own `GET /1.0/instances` on its unix socket, in the same run, with 1 and with 2
worker processes.

    sudo .venv/bin/python bench/list_throughput.py [--count 10] [--seconds 5] [--workers 1 2]

For each `workers` value the real service is started (HTTPS, `workers: W`) in a project
of its own with N instances of one shape (the only instances of that project, so both
servers list the same N). Then, taking turns, each path is loaded by 1 and by 8 client
processes (processes, so that the client is not the bottleneck), each with one
kept-alive connection, for `--seconds`:

- the governor's `GET /1.0/deployments/D/shapes/S/instances` (URLs, recursion=0) over
  HTTPS with its client certificate (an `ro` deployment key);
- LXD's `GET /1.0/instances?project=P` on LXD's unix socket.

Printed: requests per second of each, and the ratio service / LXD for each worker count
and client count; also the CPU time each server spent a request (its process and
children, from /proc), which other load on a shared machine moves far less than req/s.
Goal: >= 1.0 (the service serves its URL listing at least as fast as
LXD). The last line is JSON: {"bench": "list_throughput", "rps": {...}, "ratios": {...}}.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

import _common
import httpx
from list_instances import governor_client, unix_client

DEPLOYMENT = "bench"
SHAPE = "list"
GOAL = 1.0
CLIENTS = (1, 8)
READY_TIMEOUT = 300.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", "-n", type=int, default=10,
                        help="instances in the shape (default 10)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds each path is loaded, per client count (default 5)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of every path (their requests are summed; default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="the service's worker counts to measure (default: 1 2)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record the service (and its workers) with py-spy into this "
                             "file (.svg: a flame graph, .txt: collapsed stacks) while "
                             "the 8 clients load it (needs py-spy)")
    _common.add_common_arguments(parser)
    return parser.parse_args()


def _client_loop(kind: str, target: dict, start: float, seconds: float, results) -> None:
    """One client process: one kept-alive connection, requests until the time is up."""
    if kind == "service":
        client = governor_client(target["service"], target["url"], target["certificate"])
        url, params = target["path"], {"project": target["project"]}
    else:
        client = unix_client(target["socket"])
        url, params = "/1.0/instances", {"project": target["project"]}
    with client:
        client.get(url, params=params).raise_for_status()  # the connection, outside time
        while time.time() < start:
            time.sleep(0.001)  # the start line is a wall-clock time shared by processes
        done, errors = 0, 0
        end = start + seconds
        while time.time() < end:
            answer = client.get(url, params=params)
            if answer.status_code == 200:
                done += 1
            else:
                errors += 1
    results.put((done, errors))


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children alive now: what the
    server spent, whatever else the machine runs (a shared machine moves req/s, not
    this much)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def load(kind: str, target: dict, clients: int, seconds: float) -> tuple[float, int]:
    """Requests per second of `clients` processes on one path, and the errors seen."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.time() + 1.0 + 0.05 * clients  # every client connected by then
    processes = [context.Process(target=_client_loop,
                                 args=(kind, target, start, seconds, results))
                 for _ in range(clients)]
    for process in processes:
        process.start()
    counts = [results.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join(30)
    return sum(c[0] for c in counts) / seconds, sum(c[1] for c in counts)


def _wait_running(lxd_http: httpx.Client, project: str, count: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        listed = lxd_http.get("/1.0/instances", params={
            "project": project, "recursion": 1}).json()["metadata"]
        if sum(1 for i in listed if i["status"] == "Running") == count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {count} instances did not start in time")
        time.sleep(0.5)  # LXD starts them: nothing here to block on


def _profile(pid: int, output: Path, seconds: float):
    import subprocess
    raw = ["--format", "raw"] if output.suffix == ".txt" else []  # collapsed stacks
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration",
                             str(int(seconds) + 1), "--output", str(output), "--subprocesses",
                             "--nonblocking", *raw], stdout=subprocess.DEVNULL)


def measure(args: argparse.Namespace, lxd, workers: int) -> dict[str, float]:
    port = _common.free_port()
    rps: dict[str, float] = {}
    with _common.lxd_project(lxd, args.pool, name=f"bench-{workers}w-{port}") as project, \
            _common.service(lxd, log_level=args.service_log_level, keep_log=args.keep_log,
                            extra_config={"https_address": f"127.0.0.1:{port}",
                                          "workers": workers}) as svc:
        admin = svc.client.use_project(project)
        certificate = _common.governed_shape(admin, DEPLOYMENT, SHAPE, args.count)
        path = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}/instances"
        _common.log(f"workers={workers}: launching {args.count} instances")
        admin.post(path, json={"count": args.count})
        with lxd.api() as lxd_http:
            _wait_running(lxd_http, project, args.count)
        target = {"service": svc, "url": f"https://127.0.0.1:{port}", "certificate": certificate,
                  "path": path, "project": project, "socket": lxd.socket_path}
        with governor_client(svc, target["url"], certificate) as governor:
            urls = governor.get(path, params={"project": project}).json()["metadata"]
        assert len(urls) == args.count, urls
        cpu: dict[str, float] = {}
        served: dict[str, float] = {}
        for clients in CLIENTS:
            for kind in ("service", "lxd"):
                rps[f"{kind}_{clients}"] = 0.0
                cpu[f"{kind}_{clients}"] = served[f"{kind}_{clients}"] = 0.0
        for round_ in range(args.rounds):
            for clients in CLIENTS:
                order = ("service", "lxd") if round_ % 2 == 0 else ("lxd", "service")
                for kind in order:
                    spy = None
                    if args.profile and kind == "service" and clients == max(CLIENTS) \
                            and round_ == 0:
                        spy = _profile(svc.process.pid, args.profile.with_suffix(
                            f".w{workers}{args.profile.suffix}"), args.seconds)
                    server = svc.process.pid if kind == "service" else lxd._process.pid
                    cpu_before = cpu_seconds(server)
                    value, errors = load(kind, target, clients, args.seconds)
                    used = cpu_seconds(server) - cpu_before
                    cpu[f"{kind}_{clients}"] += used
                    served[f"{kind}_{clients}"] += value * args.seconds
                    if spy is not None:
                        spy.wait(60)
                    if errors:
                        raise RuntimeError(f"{kind}, {clients} clients: {errors} errors")
                    rps[f"{kind}_{clients}"] += value / args.rounds
                    per_request = used * 1000 / max(1.0, value * args.seconds)
                    _common.log(f"workers={workers} {kind:>7} {clients} client(s): "
                                f"{value:8.1f} req/s, {per_request:.2f} ms CPU a request")
        for path, seconds in cpu.items():
            rps[f"cpu_ms_{path}"] = seconds * 1000 / max(1.0, served[path])
    return rps


def main() -> int:
    args = parse_args()
    if args.count < 1 or args.seconds <= 0 or args.rounds < 1:
        raise SystemExit("--count and --rounds must be at least 1, --seconds above 0")
    load_before = _common.loadavg()
    results: dict[str, dict[str, float]] = {}
    with _common.lxd_daemon(args.lxd_dir) as lxd:
        for workers in args.workers:
            results[f"workers_{workers}"] = measure(args, lxd, workers)
    load_after = _common.loadavg()
    ratios: dict[str, float] = {}
    for name, rps in results.items():
        for clients in CLIENTS:
            ratio = rps[f"service_{clients}"] / rps[f"lxd_{clients}"]
            ratios[f"{name}_clients_{clients}"] = round(ratio, 3)
            cpu_ratio = rps[f"cpu_ms_lxd_{clients}"] / rps[f"cpu_ms_service_{clients}"]
            ratios[f"{name}_clients_{clients}_cpu"] = round(cpu_ratio, 3)
            print(f"{name}, {clients} client(s): service {rps[f'service_{clients}']:8.1f} "
                  f"req/s, LXD {rps[f'lxd_{clients}']:8.1f} req/s: ratio {ratio:.2f} "
                  f"(goal >= {GOAL}: {'met' if ratio >= GOAL else 'MISSED'}); CPU a request: "
                  f"service {rps[f'cpu_ms_service_{clients}']:.2f} ms, LXD "
                  f"{rps[f'cpu_ms_lxd_{clients}']:.2f} ms (LXD / service {cpu_ratio:.2f})")
    print(f"load average before: {load_before}, after: {load_after}")
    _common.emit({"bench": "list_throughput", "n": args.count, "seconds": args.seconds,
                  "rounds": args.rounds, "goal": GOAL,
                  "rps": {name: {k: round(v, 3 if k.startswith("cpu_ms") else 1)
                                 for k, v in rps.items()}
                          for name, rps in results.items()},
                  "ratios": ratios, "cpus": multiprocessing.cpu_count(),
                  "loadavg_before": load_before, "loadavg_after": load_after})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

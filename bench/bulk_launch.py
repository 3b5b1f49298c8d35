"""Bulk launch: one bulk launch of N instances through the Deployments API, against N
sequential launches through pylxd straight on LXD, in the same run.

    sudo .venv/bin/python bench/bulk_launch.py [--count 8] [--rounds 4]
                                               [--bulk-concurrency C] [--direct-parallel]

A bulk launch is `POST /1.0/deployments/D/shapes/S/instances {"count": N}` then
`GET /1.0/operations/ID/wait` on the batch operation (DeploymentsClient.wait_operation):
the service reserves the N slots in one transaction, then creates and starts the
members on its bulk pool (`bulk_concurrency` at once; `--bulk-concurrency` sets it for
this run's service). A sequential launch is `client.instances.create(body, wait=True)`
then `instance.start(wait=True)` with pylxd, N times one after the other, the same body
(the shape's template, the same config keys), same image, same project.

Each round times one bulk launch and one sequential run, taking turns which goes first
(ABBA across rounds), so that drift and other load fall on both alike; the instances are
deleted after each, outside the timed part. An untimed bulk launch and a few direct
launches warm connections and caches first. With `--direct-parallel` each round also
times N direct launches through pylxd on `bulk_concurrency` threads (what plain LXD can
do in parallel on this machine: the limit of the ratio).

Output: one line per timed run, the totals of each path and the ratio bulk / sequential
(goal <= 0.70 on a 2-core machine); the last line is a JSON object:
{"bench": "bulk_launch", "n": 8, "rounds": 4, "bulk_concurrency": C, "bulk_s": ...,
 "sequential_s": ..., "ratio": ..., ...}, where bulk_s and sequential_s are mean seconds
per run of N and ratio is their quotient (= total bulk time / total sequential time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from statistics import mean

import _common
import pylxd

from lxd_deployments.client import OperationFailed

DEPLOYMENT = "bench"
SHAPE = "bulk"
GOAL = 0.70
SETTLE_SECONDS = 1.0  # after a run's deletes, let LXD's events drain before timing again
DEFAULT_CONCURRENCY = 3  # the service's default bulk_concurrency


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", "-n", type=int, default=8,
                        help="instances per bulk launch and per sequential run (default 8)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="timed runs of each path, alternating which goes first "
                             "(default 4)")
    parser.add_argument("--bulk-concurrency", type=int, default=None,
                        help="the service's bulk_concurrency for this run (default: the "
                             "service's default)")
    parser.add_argument("--direct-parallel", action="store_true",
                        help="also time N direct launches through pylxd on "
                             "bulk_concurrency threads (plain LXD's parallel limit)")
    _common.add_common_arguments(parser)
    return parser.parse_args()


class Paths:
    """The ways to launch N instances, with their untimed clean-up."""

    def __init__(self, env: _common.BenchEnvironment, count: int, concurrency: int) -> None:
        self.count = count
        self.concurrency = concurrency
        self.api = env.client
        self.pylxd = env.pylxd_client()
        self.shape_url = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}"
        self.instances_url = f"{self.shape_url}/instances"
        self.api.post("/1.0/deployments", json={"name": DEPLOYMENT})
        self.api.post(f"/1.0/deployments/{DEPLOYMENT}/shapes", json={
            "name": SHAPE, "scaling_minimum": 0, "scaling_maximum": count,
            "instance_template": {"source": {"type": "image", "alias": _common.BUSYBOX_ALIAS}},
        })
        shape = self.api.get(self.shape_url).metadata
        # The body the service sends LXD: the template plus its ownership keys (another
        # service id here, so the service never takes these instances for its own).
        self.template = dict(shape["instance_template"])
        self.template["config"] = {
            **self.template.get("config", {}),
            "user.lxd-deployments.deployment": DEPLOYMENT,
            "user.lxd-deployments.shape": SHAPE,
            "user.lxd-deployments.service": "bench-direct",
        }
        self.round = 0

    # --- timed ----------------------------------------------------------------------------

    def bulk(self) -> list[str]:
        answer = self.api.post(self.instances_url, json={"count": self.count})
        final = self.api.wait_operation(answer.operation)
        return list(final.metadata["instances"])

    def _launch_direct(self, name: str) -> None:
        instance = self.pylxd.instances.create({**self.template, "name": name}, wait=True)
        instance.start(wait=True)

    def sequential(self) -> list[str]:
        names = [f"s{self.round}-{i}" for i in range(self.count)]
        for name in names:
            self._launch_direct(name)
        return names

    def parallel(self) -> list[str]:
        names = [f"p{self.round}-{i}" for i in range(self.count)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(self._launch_direct, names))
        return names

    # --- untimed: clean-up -----------------------------------------------------------------

    def delete_bulk(self, names: list[str]) -> None:
        for _ in range(3):
            try:
                answer = self.api.put(f"{self.shape_url}/scale", json={"count": 0})
                self.api.wait_operation(answer.operation)
                return
            except OperationFailed as err:  # e.g. one stopped on its own meanwhile: again
                _common.log(f"scaling to 0 failed ({err.message}); trying again")
        raise RuntimeError("could not scale the benchmark's shape to 0")

    def delete_direct(self, names: list[str]) -> None:
        _common.delete_instances(self.pylxd, names)


def timed(run) -> tuple[float, list[str]]:
    start = time.perf_counter()
    names = run()
    return time.perf_counter() - start, names


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    return "?"


def main() -> int:
    args = parse_args()
    if args.count < 1 or args.rounds < 1:
        raise SystemExit("--count and --rounds must be at least 1")
    if args.bulk_concurrency is not None and args.bulk_concurrency < 1:
        raise SystemExit("--bulk-concurrency must be at least 1")
    concurrency = args.bulk_concurrency or DEFAULT_CONCURRENCY
    extra = {} if args.bulk_concurrency is None else {"bulk_concurrency": concurrency}
    load_before = loadavg()
    with _common.lxd_daemon(args.lxd_dir) as lxd, _common.lxd_project(lxd, args.pool) as project, \
            _common.service(lxd, log_level=args.service_log_level, keep_log=args.keep_log,
                            extra_config=extra) as svc:
        env = _common.BenchEnvironment(lxd, project, svc)
        paths = Paths(env, args.count, concurrency)
        kinds = {"bulk": (paths.bulk, paths.delete_bulk),
                 "sequential": (paths.sequential, paths.delete_direct)}
        if args.direct_parallel:
            kinds["parallel"] = (paths.parallel, paths.delete_direct)

        _common.log("warming up (an untimed bulk launch, and direct launches)")
        paths.round = -1
        for run, delete in kinds.values():
            delete(run())
        time.sleep(SETTLE_SECONDS)

        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        order = list(kinds)
        for round_number in range(args.rounds):
            paths.round = round_number
            for kind in order if round_number % 2 == 0 else order[::-1]:
                run, delete = kinds[kind]
                seconds, names = timed(run)
                times[kind].append(seconds)
                print(f"round {round_number + 1} {kind:>10}: {len(names)} instances in "
                      f"{seconds:7.3f} s ({seconds / len(names):.4f} s/instance)", flush=True)
                delete(names)
                time.sleep(SETTLE_SECONDS)

    bulk_s, sequential_s = mean(times["bulk"]), mean(times["sequential"])
    ratio = bulk_s / sequential_s
    round_ratios = [b / s for b, s in zip(times["bulk"], times["sequential"], strict=True)]
    print(f"bulk of {args.count}:       {bulk_s:.3f} s mean "
          f"(median {_common.median(times['bulk']):.3f}; bulk_concurrency {concurrency})")
    print(f"{args.count} sequential:     {sequential_s:.3f} s mean "
          f"(median {_common.median(times['sequential']):.3f})")
    result = {
        "bench": "bulk_launch", "n": args.count, "rounds": args.rounds,
        "bulk_concurrency": concurrency, "bulk_s": round(bulk_s, 4),
        "sequential_s": round(sequential_s, 4), "ratio": round(ratio, 4),
        "median_ratio": round(_common.median(times["bulk"])
                              / _common.median(times["sequential"]), 4),
        "round_ratios": [round(r, 4) for r in round_ratios],
    }
    if args.direct_parallel:
        parallel_s = mean(times["parallel"])
        result["direct_parallel_s"] = round(parallel_s, 4)
        result["direct_parallel_ratio"] = round(parallel_s / sequential_s, 4)
        print(f"{args.count} direct on {concurrency} threads: {parallel_s:.3f} s mean; "
              f"ratio to sequential {parallel_s / sequential_s:.3f} (plain LXD's limit)")
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in round_ratios)}")
    print(f"ratio bulk/sequential: {ratio:.3f}; goal <= {GOAL}: "
          f"{'met' if ratio <= GOAL else 'MISSED'}")
    result.update({"goal": GOAL, "loadavg_before": load_before, "loadavg_after": loadavg(),
                   "cpus": os.cpu_count(), "pylxd": pylxd.__version__})
    _common.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Launch overhead: N sequential launches through the Deployments API, each waited, against
the same N launches through pylxd straight on LXD, in the same run.

    sudo .venv/bin/python bench/launch_overhead.py [--count 20] [--rounds 4] [--lxd-dir DIR]

An API launch is `POST /1.0/deployments/D/shapes/S/instances` then
`GET /1.0/operations/ID/wait` (DeploymentsClient.wait_operation): the service reserves the
slot, creates the instance from the shape's template and starts it. A direct launch is
`client.instances.create(body, wait=True)` then `instance.start(wait=True)` with pylxd,
the same body (the shape's template, the same config keys), same image, same project.

Each round makes N sequential launches of each path. By default the paths take turns
launch by launch (A D D A A D ...; `--order blocks`: N of one path, then N of the other,
ABBA across rounds), so that drift and the load of other processes on the machine fall
on both alike. The instances of a round are deleted after it, outside the timed part;
one untimed launch of each path warms connections and caches first.

Output: one line per run, then the per-launch figures (mean and median) of each path and
the ratio API / direct (goal <= 1.05); the last line is a JSON object:
{"bench": "launch_overhead", "n": 20, "rounds": 4, "api_s": ..., "direct_s": ...,
 "ratio": ..., ...}, where api_s and direct_s are mean seconds per launch over every
round and ratio is their quotient (= total API time / total direct time).
"""

from __future__ import annotations

import argparse
import time
from statistics import mean

import _common
import pylxd

from lxd_deployments.client import OperationFailed

DEPLOYMENT = "bench"
SHAPE = "launch"
GOAL = 1.05
SETTLE_SECONDS = 1.0  # after a run's deletes, let LXD's events drain before timing again


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", "-n", type=int, default=20,
                        help="sequential launches per run (default 20)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="runs of each path, alternating which goes first (default 4)")
    parser.add_argument("--order", choices=["interleaved", "blocks"], default="interleaved",
                        help="interleaved: the paths take turns launch by launch (default); "
                             "blocks: N launches of one path, then N of the other")
    _common.add_common_arguments(parser)
    return parser.parse_args()


class Paths:
    """The two ways to launch, with their untimed clean-up."""

    def __init__(self, env: _common.BenchEnvironment, count: int) -> None:
        self.env = env
        self.api = env.client
        self.pylxd = env.pylxd_client()
        self.instances_url = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}/instances"
        self.api.post("/1.0/deployments", json={"name": DEPLOYMENT})
        self.api.post(f"/1.0/deployments/{DEPLOYMENT}/shapes", json={
            "name": SHAPE, "scaling_minimum": 0, "scaling_maximum": count,
            "instance_template": {"source": {"type": "image", "alias": _common.BUSYBOX_ALIAS}},
        })
        shape = self.api.get(f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}").metadata
        # The body the service sends LXD: the template plus its ownership keys (another
        # service id here, so the service never takes these instances for its own).
        self.template = dict(shape["instance_template"])
        self.template["config"] = {
            **self.template.get("config", {}),
            "user.lxd-deployments.deployment": DEPLOYMENT,
            "user.lxd-deployments.shape": SHAPE,
            "user.lxd-deployments.service": "bench-direct",
        }

    # --- timed: one launch each --------------------------------------------------------

    def launch_api(self, name: str) -> None:
        answer = self.api.post(self.instances_url, json={"instance_name": name})
        self.api.wait_operation(answer.operation)

    def launch_direct(self, name: str) -> None:
        instance = self.pylxd.instances.create({**self.template, "name": name}, wait=True)
        instance.start(wait=True)

    # --- untimed: clean-up -----------------------------------------------------------------

    def delete_api(self, names: list[str]) -> None:
        # Every delete is queued at once (the service runs them on its worker pool).
        operations = {name: self.api.delete(f"{self.instances_url}/{name}").operation
                      for name in names}
        for name, operation in operations.items():
            try:
                self.api.wait_operation(operation)
            except OperationFailed as err:  # e.g. it stopped on its own meanwhile: again
                _common.log(f"deleting {name} failed ({err.message}); trying again")
                self.api.wait_operation(
                    self.api.delete(f"{self.instances_url}/{name}").operation)

    def delete_direct(self, names: list[str]) -> None:
        _common.delete_instances(self.pylxd, names)


def timed(launch, name: str) -> float:
    start = time.perf_counter()
    launch(name)
    return time.perf_counter() - start


def report_run(round_number: int, kind: str, times: list[float]) -> None:
    print(f"round {round_number + 1} {kind:>6}: {len(times)} launches in "
          f"{sum(times):7.3f} s, {mean(times):.4f} s/launch "
          f"(median {_common.median(times):.4f})", flush=True)


def run_round(kinds, round_number: int, count: int, order: str) -> dict[str, list[float]]:
    """One round: `count` sequential launches of each kind, then their (untimed) deletes.

    `interleaved`: the kinds take turns launch by launch (A D D A A D ...), so that each
    API launch has a direct one next to it in time. `blocks`: all of one kind, then all
    of the other, the first kind alternating from round to round (ABBA)."""
    names = {kind: [f"{kind[0]}{round_number}-{i}" for i in range(count)] for kind in kinds}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    first, second = ("api", "direct") if round_number % 2 == 0 else ("direct", "api")
    if order == "interleaved":
        for i in range(count):
            for kind in (first, second) if i % 2 == 0 else (second, first):
                times[kind].append(timed(kinds[kind][0], names[kind][i]))
        for kind in (first, second):
            report_run(round_number, kind, times[kind])
            kinds[kind][1](names[kind])
        time.sleep(SETTLE_SECONDS)
    else:
        for kind in (first, second):
            times[kind] = [timed(kinds[kind][0], name) for name in names[kind]]
            report_run(round_number, kind, times[kind])
            kinds[kind][1](names[kind])
            time.sleep(SETTLE_SECONDS)
    return times


def main() -> int:
    args = parse_args()
    if args.count < 1 or args.rounds < 1:
        raise SystemExit("--count and --rounds must be at least 1")
    with _common.bench_environment(args) as env:
        paths = Paths(env, args.count)
        kinds = {"api": (paths.launch_api, paths.delete_api),
                 "direct": (paths.launch_direct, paths.delete_direct)}

        _common.log("warming up (one untimed launch of each)")
        for kind, (launch, delete) in kinds.items():
            launch(f"warm-{kind}")
            delete([f"warm-{kind}"])
        time.sleep(SETTLE_SECONDS)

        runs: dict[str, list[list[float]]] = {"api": [], "direct": []}
        for round_number in range(args.rounds):
            for kind, times in run_round(kinds, round_number, args.count, args.order).items():
                runs[kind].append(times)

    every = {kind: [t for run in kind_runs for t in run] for kind, kind_runs in runs.items()}
    api_s, direct_s = mean(every["api"]), mean(every["direct"])
    api_median, direct_median = _common.median(every["api"]), _common.median(every["direct"])
    paired = [a - d for a_run, d_run in zip(runs["api"], runs["direct"], strict=True)
              for a, d in zip(a_run, d_run, strict=True)]
    round_ratios = [sum(a) / sum(d) for a, d in zip(runs["api"], runs["direct"], strict=True)]
    ratio = api_s / direct_s
    print(f"API:    {api_s:.4f} s/launch mean, {api_median:.4f} median "
          f"({len(every['api'])} launches)")
    print(f"direct: {direct_s:.4f} s/launch mean, {direct_median:.4f} median "
          f"({len(every['direct'])} launches)")
    print(f"paired difference API - direct: median {_common.median(paired) * 1000:.2f} ms")
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in round_ratios)}")
    print(f"ratio API/direct: {ratio:.3f} (medians: {api_median / direct_median:.3f}); "
          f"goal <= {GOAL}: {'met' if ratio <= GOAL else 'MISSED'}")
    _common.emit({
        "bench": "launch_overhead", "n": args.count, "rounds": args.rounds, "order": args.order,
        "api_s": round(api_s, 5), "direct_s": round(direct_s, 5), "ratio": round(ratio, 4),
        "api_median_s": round(api_median, 5), "direct_median_s": round(direct_median, 5),
        "median_ratio": round(api_median / direct_median, 4),
        "round_ratios": [round(r, 4) for r in round_ratios],
        "overhead_ms": round((api_s - direct_s) * 1000, 2),
        "paired_median_diff_ms": round(_common.median(paired) * 1000, 2), "goal": GOAL,
        "pylxd": pylxd.__version__,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Warm pool: a launch served by the shape's warm pool against a cold launch (created from
the image), same run, same service, for the busybox image and for a large image.

    sudo .venv/bin/python bench/warm_pool.py [--count 5] [--pad-mb 128] [--lxd-dir DIR]

The large image is the busybox image padded with a file of random bytes (`--pad-mb`,
default 128 MB; random so that compression does not shrink it), built and imported by
the bench. For each image two shapes take the same template: `cold-*` without a pool,
`warm-*` with `warm_pool.size` 1. Each timed launch is `POST .../instances` then the
operation's wait, through the API, one at a time; the paths take turns (W C C W ...).
Before every timed launch the bench waits (untimed) until the warm pool is full again
and LXD runs no operation in the project, so that a refill never runs next to a timed
launch; the launched instances are deleted after each pair, untimed.

Every warm launch must say it took a pool instance (`warm_pool` in its operation's
metadata), or the bench fails. Output: the figures per image and the ratio warm / cold
(goal <= 0.3 on the large image); the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path
from statistics import mean

import _common

DEPLOYMENT = "bench"
GOAL = 0.3
WAIT = 600.0
WARM_KEY = "user.lxd-deployments.warm-pool"
BIG_ALIAS = "busybox-padded"
CHUNK = 1 << 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", "-n", type=int, default=5,
                        help="timed launches of each path per image (default 5)")
    parser.add_argument("--pad-mb", type=int, default=128,
                        help="size of the large image's random padding in MB (default 128)")
    _common.add_common_arguments(parser)
    return parser.parse_args()


def build_padded_image(lxd, pad_mb: int) -> None:
    """The busybox image plus `rootfs/pad.bin` of random bytes, imported as BIG_ALIAS."""
    with tempfile.TemporaryDirectory(prefix="padded-image-") as work:
        small = Path(work) / "busybox.tar.gz"
        lxd.run([str(_common.BUILD_IMAGE), str(small)])
        big = Path(work) / "padded.tar.gz"
        with tarfile.open(small) as source, tarfile.open(big, "w:gz", compresslevel=1) as out:
            for member in source.getmembers():
                data = source.extractfile(member) if member.isfile() else None
                if member.name == "metadata.yaml" and data is not None:
                    text = (data.read().decode() + "  padded: yes\n").encode()
                    member.size = len(text)
                    data = io.BytesIO(text)
                out.addfile(member, data)
            pad = Path(work) / "pad.bin"
            with pad.open("wb") as handle:
                for _ in range(pad_mb):
                    handle.write(os.urandom(CHUNK))
            out.add(pad, arcname="rootfs/pad.bin")
        _common.log(f"padded image: {big.stat().st_size / 1e6:.0f} MB compressed")
        lxd.lxc("image", "import", str(big), "--alias", BIG_ALIAS)


def pool_full(client, project: str, shape: str) -> bool:
    """The shape's pool holds its instance and LXD runs nothing in the project."""
    instances = client.api.instances.get(params={"recursion": 1, "project": project}
                                         ).json()["metadata"]
    stopped = [i for i in instances or []
               if (i.get("config") or {}).get(WARM_KEY) == shape and i["status"] == "Stopped"]
    running = client.api.operations.get(params={"project": project}).json()["metadata"] or {}
    return len(stopped) >= 1 and not running.get("running")


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {WAIT}s")
        time.sleep(0.2)  # another process's work (the refill): nothing to block on


def launch(api, shape: str, name: str):
    start = time.perf_counter()
    answer = api.post(f"/1.0/deployments/{DEPLOYMENT}/shapes/{shape}/instances",
                      json={"instance_name": name})
    final = api.wait_operation(answer.operation)
    return time.perf_counter() - start, final


def delete(api, shape: str, name: str) -> None:
    answer = api.delete(f"/1.0/deployments/{DEPLOYMENT}/shapes/{shape}/instances/{name}")
    api.wait_operation(answer.operation)


def bench_image(env, alias: str, count: int) -> dict[str, list[float]]:
    api = env.client
    client = env.pylxd_client()
    tag = "big" if alias == BIG_ALIAS else "small"
    for kind, config in (("cold", {}), ("warm", {"warm_pool.size": "1"})):
        api.post(f"/1.0/deployments/{DEPLOYMENT}/shapes", json={
            "name": f"{kind}-{tag}", "scaling_minimum": 0, "scaling_maximum": 2,
            "config": config,
            "instance_template": {"source": {"type": "image", "alias": alias}}})
    times: dict[str, list[float]] = {"warm": [], "cold": []}
    for i in range(count):
        for kind in ("warm", "cold") if i % 2 == 0 else ("cold", "warm"):
            shape = f"{kind}-{tag}"
            wait_until(lambda: pool_full(client, env.project, f"warm-{tag}"),
                       "the warm pool refilled")
            seconds, final = launch(api, shape, f"{kind}-{tag}-{i}")
            if kind == "warm" and not final.metadata.get("warm_pool"):
                raise SystemExit(f"warm launch {i} of {alias} did not take a pool instance")
            times[kind].append(seconds)
        for kind in ("warm", "cold"):
            delete(api, f"{kind}-{tag}", f"{kind}-{tag}-{i}")
        print(f"{alias} pair {i + 1}: warm {times['warm'][-1]:.3f} s, "
              f"cold {times['cold'][-1]:.3f} s", flush=True)
    return times


def main() -> int:
    args = parse_args()
    if args.count < 1 or args.pad_mb < 100:
        raise SystemExit("--count must be at least 1 and --pad-mb at least 100")
    results = {}
    with _common.bench_environment(args) as env:
        build_padded_image(env.lxd, args.pad_mb)
        env.client.post("/1.0/deployments", json={"name": DEPLOYMENT})
        try:
            for alias in (_common.BUSYBOX_ALIAS, BIG_ALIAS):
                times = bench_image(env, alias, args.count)
                warm, cold = mean(times["warm"]), mean(times["cold"])
                results[alias] = {"warm_s": round(warm, 4), "cold_s": round(cold, 4),
                                  "ratio": round(warm / cold, 4),
                                  "warm_median_s": round(_common.median(times["warm"]), 4),
                                  "cold_median_s": round(_common.median(times["cold"]), 4)}
        finally:
            env.lxd.lxc("image", "delete", BIG_ALIAS, check=False)
    for alias, figures in results.items():
        print(f"{alias}: warm {figures['warm_s']:.3f} s/launch, cold {figures['cold_s']:.3f} "
              f"s/launch (medians {figures['warm_median_s']:.3f} / "
              f"{figures['cold_median_s']:.3f}); ratio warm/cold {figures['ratio']:.3f}")
    big = results[BIG_ALIAS]["ratio"]
    print(f"large image ({args.pad_mb} MB padding): ratio {big:.3f}; goal <= {GOAL}: "
          f"{'met' if big <= GOAL else 'MISSED'} (load {_common.loadavg()})")
    _common.emit({"bench": "warm_pool", "n": args.count, "pad_mb": args.pad_mb,
                  "images": results, "goal": GOAL, "ratio_large": big})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

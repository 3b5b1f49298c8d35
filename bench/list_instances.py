"""Listing a shape's instances: the governor's list through the Deployments API against
LXD's own instance list of the same instances, in the same run.

    sudo .venv/bin/python bench/list_instances.py [--count 30] [--repeat 200] [--lxd-dir DIR]

N instances are launched in one shape (the only instances of the benchmark's project),
then these requests are timed, taking turns request by request:

- URLs: `GET /1.0/deployments/D/shapes/S/instances` through the service, as a governor
  (HTTPS with its client certificate and an `ro` deployment key, on a kept-alive
  connection) and as the admin on the service's unix socket; against LXD's
  `GET /1.0/instances?project=P` on LXD's unix socket. The service answers from its
  store alone; LXD from its database.
- Objects, level by level as LXD has them (like with like): the service's `?recursion=1`
  (LXD's instance objects without state: the service asks LXD for `recursion=1` and
  keeps the shape's instances) against LXD's `GET /1.0/instances?recursion=1`, and the
  service's `?recursion=2` (with state) against LXD's `recursion=2`.

Every path uses the same client (httpx, one connection kept alive) and reads the whole
answer; JSON decoding by the client is not timed. The floor of each server is timed too:
`GET /1.0` (no store, no list), what any request costs before it does anything.

Goals, on the medians: the governor's URL list at least 3x faster than LXD's
(`urls_speedup` >= 3), and each of its object lists within 1.2x of LXD's at the same
level (`recursion1_ratio`, `recursion2_ratio` <= 1.2).

The last line is a JSON object: {"bench": "list_instances", "n": 30, "urls_speedup": ...,
"recursion1_ratio": ..., "recursion2_ratio": ..., "ms": {path: median ms}, ...}.
"""

from __future__ import annotations

import argparse
import ssl
import tempfile
import time
from pathlib import Path
from statistics import mean

import _common
import httpx

DEPLOYMENT = "bench"
SHAPE = "list"
URLS_GOAL = 3.0
RECURSION_GOAL = 1.2
_PLAIN_HTTP = ssl.create_default_context()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", "-n", type=int, default=30,
                        help="instances in the shape (default 30)")
    parser.add_argument("--repeat", type=int, default=200,
                        help="timed requests of each URL-list path (default 200)")
    parser.add_argument("--object-repeat", type=int, default=20,
                        help="timed requests of each object-list path (default 20: LXD "
                             "takes about 25 ms per instance to gather the state)")
    _common.add_common_arguments(parser)
    return parser.parse_args()


def governor_client(service: _common.Service, https_url: str, certificate) -> httpx.Client:
    """HTTPS with the governor's client certificate, pinning the service's certificate."""
    context = ssl.create_default_context(cafile=service.state_dir / "server.crt")
    context.check_hostname = False
    with tempfile.TemporaryDirectory(prefix="bench-cert-") as directory:
        cert, key = Path(directory) / "client.crt", Path(directory) / "client.key"
        cert.write_text(certificate.pem)
        key.write_text(certificate.key_pem)
        context.load_cert_chain(cert, key)
    return httpx.Client(base_url=https_url, verify=context, trust_env=False, timeout=120)


def unix_client(socket_path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path), verify=_PLAIN_HTTP),
                        base_url="http://lxd", trust_env=False, timeout=120)


def launch(env_client, count: int) -> list[str]:
    """N instances of the shape, launched at once and waited for."""
    instances = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}/instances"
    names = [f"i{n:03d}" for n in range(count)]
    operations = [env_client.post(instances, json={"instance_name": name}).operation
                  for name in names]
    for operation in operations:
        env_client.wait_operation(operation)
    return names


def get(client: httpx.Client, url: str, params: dict) -> float:
    start = time.perf_counter()
    answer = client.get(url, params=params)
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        raise RuntimeError(f"GET {url} {params}: {answer.status_code} {answer.text[:300]}")
    return elapsed


def main() -> int:
    args = parse_args()
    if args.count < 1 or args.repeat < 1 or args.object_repeat < 1:
        raise SystemExit("--count, --repeat and --object-repeat must be at least 1")
    load_before = _common.loadavg()
    port = _common.free_port()
    with _common.lxd_daemon(args.lxd_dir) as lxd, \
            _common.lxd_project(lxd, args.pool) as project, \
            _common.service(lxd, log_level=args.service_log_level, keep_log=args.keep_log,
                            extra_config={"https_address": f"127.0.0.1:{port}"}) as svc:
        admin = svc.client.use_project(project)
        certificate = _common.governed_shape(admin, DEPLOYMENT, SHAPE, args.count)
        _common.log(f"launching {args.count} instances")
        names = launch(admin, args.count)

        shape_instances = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}/instances"
        with governor_client(svc, f"https://127.0.0.1:{port}", certificate) as governor, \
                unix_client(svc.socket_path) as admin_http, lxd.api() as lxd_http:
            # Like with like: the same instances, the same objects.
            for level in (1, 2):
                listed = governor.get(shape_instances, params={
                    "project": project, "recursion": level}).json()["metadata"]
                direct = lxd_http.get("/1.0/instances", params={
                    "project": project, "recursion": level}).json()["metadata"]
                assert sorted(i["name"] for i in listed) == names, listed
                assert sorted(i["name"] for i in direct) == names, direct
                with_state = [bool(i.get("state")) for i in listed + direct]
                assert with_state == [level == 2] * len(with_state), \
                    f"recursion={level}: state where LXD has none, or none where it has"

            paths = {
                "governor_https_urls": (governor, shape_instances, {}),
                "admin_unix_urls": (admin_http, shape_instances, {}),
                "lxd_urls": (lxd_http, "/1.0/instances", {}),
                # The floor: the cheapest route of each server (no store, no list).
                "governor_https_floor": (governor, "/1.0", {}),
                "admin_unix_floor": (admin_http, "/1.0", {}),
                "lxd_floor": (lxd_http, "/1.0", {}),
                "governor_https_recursion1": (governor, shape_instances, {"recursion": 1}),
                "admin_unix_recursion1": (admin_http, shape_instances, {"recursion": 1}),
                "lxd_recursion1": (lxd_http, "/1.0/instances", {"recursion": 1}),
                "governor_https_recursion2": (governor, shape_instances, {"recursion": 2}),
                "admin_unix_recursion2": (admin_http, shape_instances, {"recursion": 2}),
                "lxd_recursion2": (lxd_http, "/1.0/instances", {"recursion": 2}),
            }
            url_paths = [p for p in paths if p.endswith(("urls", "floor"))]
            object_paths = [p for p in paths if p not in url_paths]
            times: dict[str, list[float]] = {path: [] for path in paths}
            for group, repeat in ((url_paths, args.repeat), (object_paths, args.object_repeat)):
                _common.log(f"timing {', '.join(group)} ({repeat} each, taking turns)")
                for path in group:  # warm-up: connections, caches
                    client, url, params = paths[path]
                    get(client, url, {"project": project, **params})
                for i in range(repeat):
                    order = group[i % len(group):] + group[:i % len(group)]
                    for path in order:
                        client, url, params = paths[path]
                        times[path].append(get(client, url, {"project": project, **params}))
    load_after = _common.loadavg()

    medians = {path: _common.median(values) for path, values in times.items()}
    for path, values in times.items():
        print(f"{path:>26}: median {medians[path] * 1000:8.2f} ms, "
              f"mean {mean(values) * 1000:8.2f} ms ({len(values)} requests)")
    urls_speedup = medians["lxd_urls"] / medians["governor_https_urls"]
    admin_speedup = medians["lxd_urls"] / medians["admin_unix_urls"]
    ratios = {level: (medians[f"governor_https_recursion{level}"]
                      / medians[f"lxd_recursion{level}"],
                      medians[f"admin_unix_recursion{level}"] / medians[f"lxd_recursion{level}"])
              for level in (1, 2)}
    print(f"URLs: LXD / governor (HTTPS) = {urls_speedup:.2f}x faster "
          f"(admin, unix socket: {admin_speedup:.2f}x); goal >= {URLS_GOAL}: "
          f"{'met' if urls_speedup >= URLS_GOAL else 'MISSED'}")
    for level, (governor_ratio, admin_ratio) in ratios.items():
        print(f"recursion={level}: governor (HTTPS) / LXD recursion={level} = "
              f"{governor_ratio:.3f} (admin, unix socket: {admin_ratio:.3f}); goal <= "
              f"{RECURSION_GOAL}: {'met' if governor_ratio <= RECURSION_GOAL else 'MISSED'}")
    print(f"floor (GET /1.0): governor (HTTPS) {medians['governor_https_floor'] * 1000:.2f} ms, "
          f"admin (unix socket) {medians['admin_unix_floor'] * 1000:.2f} ms, "
          f"LXD {medians['lxd_floor'] * 1000:.2f} ms")
    print(f"load average before: {load_before}, after: {load_after}")
    _common.emit({
        "bench": "list_instances", "n": args.count, "repeat": args.repeat,
        "object_repeat": args.object_repeat,
        "urls_speedup": round(urls_speedup, 3), "urls_goal": URLS_GOAL,
        "admin_urls_speedup": round(admin_speedup, 3),
        "recursion1_ratio": round(ratios[1][0], 3), "recursion2_ratio": round(ratios[2][0], 3),
        "recursion_goal": RECURSION_GOAL,
        "admin_recursion1_ratio": round(ratios[1][1], 3),
        "admin_recursion2_ratio": round(ratios[2][1], 3),
        "ms": {path: round(value * 1000, 3) for path, value in medians.items()},
        "mean_ms": {path: round(mean(values) * 1000, 3) for path, values in times.items()},
        "loadavg_before": load_before, "loadavg_after": load_after,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

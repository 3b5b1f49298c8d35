"""Listing shapes through the management API with 100, 1,000 and 10,000 of them: time per
size and how it grows (linear: 10x the shapes, about 10x the time).

    sudo .venv/bin/python bench/list_shapes.py [--sizes 100,1000,10000] [--repeat 5]
                                               [--api-shapes 100] [--lxd-dir DIR]

Two layouts grow side by side, each in an LXD project of its own:

- one deployment holding every shape: `GET /1.0/deployments/big/shapes` (URLs) and
  `?recursion=1` (the shape objects, with config, template and `scaling_current`);
- the same number of shapes spread over deployments of 10 shapes each:
  `GET /1.0/deployments?recursion=1` (every deployment with its shapes, keys and
  `used_by`) and `GET /1.0/deployments` (URLs).

Every listing goes through the real service, as the admin on its unix socket, with one
kept-alive connection; the time is until the whole answer is read (the client's JSON
decoding is not timed). Every shape has a template of its own (a config key), a
description and a config key, as real ones would.

Making 10,000 shapes through the API takes long (each POST checks the template against
LXD), so the first `--api-shapes` of each layout are made with `POST .../shapes` and
the rest are written straight into the service's store, in the same form the API
writes (`repository.insert_shape`, the template as the API stores it), while the
service runs; `--api-shapes 0` makes them
all through the store, a large `--api-shapes` all through the API. The listings do not
care how a row got there; they are what is measured.

Goal: every listing under 1 s at 10,000 shapes, and linear growth. The last line is a JSON
object: {"bench": "list_shapes", "sizes": [...], "seconds": {listing: [per size]},
"growth": {listing: [t(n) / t(previous n)]}, "goal_s": 1.0, "met": ...}.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from statistics import mean

import _common
import httpx

from lxd_deployments.models import InstanceTemplate
from lxd_deployments.store import open_database
from lxd_deployments.store import repository as repo

GOAL_SECONDS = 1.0
SHAPES_PER_DEPLOYMENT = 10  # the spread layout


def template(index: int) -> dict:
    """Each shape's template differs (a config key): nothing may profit from them being
    all alike."""
    return {"source": {"type": "image", "alias": _common.BUSYBOX_ALIAS},
            "config": {"user.shape-index": str(index)}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000",
                        help="numbers of shapes, ascending (default 100,1000,10000)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed requests of each listing per size (default 5)")
    parser.add_argument("--api-shapes", type=int, default=100,
                        help="shapes of each layout made through the API; the rest go "
                             "straight into the store (default 100)")
    _common.add_common_arguments(parser)
    args = parser.parse_args()
    args.sizes = [int(size) for size in args.sizes.split(",")]
    if args.sizes != sorted(args.sizes) or args.sizes[0] < SHAPES_PER_DEPLOYMENT:
        raise SystemExit(f"--sizes must be ascending, each at least {SHAPES_PER_DEPLOYMENT}")
    return args


class Layouts:
    """The two layouts, grown to a size: through the API first, then through the store."""

    def __init__(self, svc: _common.Service, big_project: str, spread_project: str,
                 api_shapes: int) -> None:
        self.svc = svc
        self.big = svc.client.use_project(big_project)
        self.spread = svc.client.use_project(spread_project)
        self.projects = (big_project, spread_project)
        self.api_shapes = api_shapes
        self.count = 0
        self.big.post("/1.0/deployments", json={"name": "big"})

    @staticmethod
    def shape_body(index: int) -> dict:
        return {"name": f"s{index:05d}", "scaling_minimum": 0, "scaling_maximum": 4,
                "description": f"shape {index}", "config": {"user.index": str(index)},
                "instance_template": template(index)}

    @staticmethod
    def spread_deployment(index: int) -> str:
        return f"d{index // SHAPES_PER_DEPLOYMENT:05d}"

    def _through_api(self, indexes: range) -> None:
        def make(index: int) -> None:
            if index % SHAPES_PER_DEPLOYMENT == 0:
                self.spread.post("/1.0/deployments",
                                 json={"name": self.spread_deployment(index)})
            self.big.post("/1.0/deployments/big/shapes", json=self.shape_body(index))
            self.spread.post(f"/1.0/deployments/{self.spread_deployment(index)}/shapes",
                             json=self.shape_body(index))

        # In groups of one spread deployment, so that each exists before its shapes.
        groups = [range(start, min(start + SHAPES_PER_DEPLOYMENT, indexes.stop))
                  for start in range(indexes.start, indexes.stop, SHAPES_PER_DEPLOYMENT)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda group: [make(index) for index in group], groups))

    def _through_store(self, indexes: range) -> None:
        database = open_database(self.svc.state_dir / "database.sqlite3")
        try:
            with database.write() as conn:
                big = repo.get_deployment(conn, self.projects[0], "big", details=False)
                spread_ids: dict[str, int] = {}
                for index in indexes:
                    name = self.spread_deployment(index)
                    if name not in spread_ids:
                        found = repo.get_deployment(conn, self.projects[1], name, details=False)
                        spread_ids[name] = found.id if found else repo.insert_deployment(
                            conn, self.projects[1], name, "", "", {})
                    body = self.shape_body(index)
                    stored = InstanceTemplate.model_validate(
                        body["instance_template"]).model_dump_json()  # as the API stores it
                    for deployment_id in (big.id, spread_ids[name]):
                        repo.insert_shape(conn, deployment_id, body["name"],
                                          body["description"], stored,
                                          body["scaling_minimum"], body["scaling_maximum"],
                                          body["config"])
        finally:
            database.close()

    def grow(self, size: int) -> None:
        start = time.perf_counter()
        through_api = range(self.count, min(size, max(self.api_shapes, self.count)))
        if through_api:
            self._through_api(through_api)
        through_store = range(max(self.count, through_api.stop), size)
        if through_store:
            self._through_store(through_store)
        _common.log(f"{size} shapes in each layout ({len(through_api)} more through the API, "
                    f"{len(through_store)} through the store) in "
                    f"{time.perf_counter() - start:.1f} s")
        self.count = size


def timed_get(http: httpx.Client, url: str, params: dict) -> tuple[float, object]:
    """Seconds until the whole answer is read (decoding it is the client's work, not
    timed), and its metadata."""
    start = time.perf_counter()
    answer = http.get(url, params=params)
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        raise RuntimeError(f"GET {url}: {answer.status_code} {answer.text[:300]}")
    return elapsed, answer.json()["metadata"]


def main() -> int:
    args = parse_args()
    load_before = _common.loadavg()
    seconds: dict[str, list[float]] = {}
    with _common.lxd_daemon(args.lxd_dir) as lxd, \
            _common.lxd_project(lxd, args.pool) as big_project, \
            _common.lxd_project(lxd, args.pool, name=f"{big_project}-spread") as spread_project, \
            _common.service(lxd, log_level=args.service_log_level,
                            keep_log=args.keep_log) as svc:
        layouts = Layouts(svc, big_project, spread_project, args.api_shapes)
        listings = {
            "shapes_urls": ("/1.0/deployments/big/shapes", {"project": big_project}),
            "shapes_recursion1": ("/1.0/deployments/big/shapes",
                                  {"project": big_project, "recursion": 1}),
            "deployments_urls": ("/1.0/deployments", {"project": spread_project}),
            "deployments_recursion1": ("/1.0/deployments",
                                       {"project": spread_project, "recursion": 1}),
        }
        seconds = {listing: [] for listing in listings}
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(svc.socket_path)),
                          base_url=_common.UNIX_BASE_URL, trust_env=False,
                          timeout=300) as http:
            for size in args.sizes:
                layouts.grow(size)
                # Check what is listed, and warm up, once each.
                for listing, (url, params) in listings.items():
                    _, metadata = timed_get(http, url, params)
                    expected = (size // SHAPES_PER_DEPLOYMENT
                                if listing.startswith("deployments") else size)
                    assert len(metadata) == expected, (listing, len(metadata), expected)
                times: dict[str, list[float]] = {listing: [] for listing in listings}
                for i in range(args.repeat):
                    names = list(listings)
                    for listing in names[i % len(names):] + names[:i % len(names)]:
                        url, params = listings[listing]
                        times[listing].append(timed_get(http, url, params)[0])
                for listing, values in times.items():
                    seconds[listing].append(_common.median(values))
                    print(f"{size:>6} shapes {listing:>23}: median {_common.median(values):.4f} s,"
                          f" mean {mean(values):.4f} s ({len(values)} requests)", flush=True)
    load_after = _common.loadavg()

    growth = {listing: [round(later / earlier, 2) for earlier, later in pairwise(values)]
              for listing, values in seconds.items()}
    size_growth = [round(later / earlier, 2)
                   for earlier, later in pairwise(args.sizes)]
    largest = {listing: values[-1] for listing, values in seconds.items()}
    met = all(value < GOAL_SECONDS for value in largest.values())
    for listing, factors in growth.items():
        print(f"{listing:>23}: growth {', '.join(f'{f:.2f}x' for f in factors)} for sizes "
              f"x{', x'.join(str(g) for g in size_growth)}; at {args.sizes[-1]} shapes "
              f"{largest[listing]:.3f} s")
    print(f"goal: every listing < {GOAL_SECONDS} s at {args.sizes[-1]} shapes: "
          f"{'met' if met else 'MISSED'}")
    print(f"load average before: {load_before}, after: {load_after}")
    _common.emit({
        "bench": "list_shapes", "sizes": args.sizes, "repeat": args.repeat,
        "seconds": {listing: [round(v, 4) for v in values] for listing, values in seconds.items()},
        "growth": growth, "size_growth": size_growth, "goal_s": GOAL_SECONDS, "met": met,
        "loadavg_before": load_before, "loadavg_after": load_after,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

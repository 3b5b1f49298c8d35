"""Concurrent requests against the real service process: a name is taken once, and the
store neither loses nor duplicates rows nor reports "database is locked".

Each request runs on its own thread with its own connection; a barrier releases them
together so that they really overlap in the service (its handlers run on a thread pool,
each asking LXD whether the project exists before it writes).
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .helpers import error_of, ok

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

CONCURRENCY = 50


def post_all(service, requests: list[tuple[str, dict]], project: str) -> list[httpx.Response]:
    """POST every (path, body) at once, each on its own connection; return the answers."""
    barrier = threading.Barrier(len(requests))

    def post(request: tuple[str, dict]) -> httpx.Response:
        path, body = request
        with service.http_client(timeout=60.0) as http:
            http.get("/1.0")  # open the connection before the race starts
            barrier.wait(timeout=60)
            return http.post(path, params={"project": project}, json=body)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(post, requests))


def test_same_deployment_name_created_once(service, lxd_project):
    requests = [("/1.0/deployments", {"name": "race", "description": f"attempt {i}"})
                for i in range(CONCURRENCY)]
    answers = post_all(service, requests, lxd_project)

    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 1, 409: CONCURRENCY - 1}, statuses
    for answer in answers:
        if answer.status_code == 409:
            assert error_of(answer) == (409, 'Deployment "race" already exists')
    winner = next(a for a in answers if a.status_code == 201)
    assert winner.headers["Location"] == f"/1.0/deployments/race?project={lxd_project}"

    rows = service.query("SELECT id, description FROM deployments WHERE project = ? AND name = ?",
                         lxd_project, "race")
    assert len(rows) == 1, rows
    # The stored row is the one whose request got the 201.
    shown = ok(service.http.get("/1.0/deployments/race", params={"project": lxd_project}))
    assert shown["description"] == rows[0][1]
    assert shown["description"].startswith("attempt ")


def test_different_deployment_names_all_created(service, lxd_project):
    names = [f"dep{i}" for i in range(CONCURRENCY)]
    requests = [("/1.0/deployments", {"name": name, "config": {"user.index": name}})
                for name in names]
    answers = post_all(service, requests, lxd_project)

    problems = [(a.status_code, a.text) for a in answers if a.status_code != 201]
    assert problems == []
    rows = service.query("SELECT name FROM deployments WHERE project = ?", lxd_project)
    assert sorted(r[0] for r in rows) == sorted(names)
    config_rows = service.query(
        "SELECT d.name, c.value FROM deployments_config c JOIN deployments d "
        "ON d.id = c.deployment_id WHERE d.project = ? AND c.key = 'user.index'", lxd_project)
    assert sorted(config_rows) == sorted((name, name) for name in names)
    listed = ok(service.http.get("/1.0/deployments",
                                 params={"project": lxd_project, "recursion": 1}))
    assert sorted(d["name"] for d in listed) == sorted(names)


def test_same_shape_name_created_once(service, lxd_project):
    """Shapes check their template against LXD before writing: the race is then decided
    by the store, still exactly once."""
    ok(service.http.post("/1.0/deployments", params={"project": lxd_project},
                         json={"name": "web"}), 201)
    body = {"name": "frontend", "scaling_maximum": 2,
            "instance_template": {"source": {"type": "image", "alias": "busybox"}}}
    requests = [("/1.0/deployments/web/shapes", {**body, "description": f"attempt {i}"})
                for i in range(CONCURRENCY)]
    answers = post_all(service, requests, lxd_project)

    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 1, 409: CONCURRENCY - 1}, statuses
    for answer in answers:
        if answer.status_code == 409:
            assert error_of(answer) == (409, 'Shape "frontend" already exists')
    rows = service.query(
        "SELECT s.name FROM deployments_shapes s JOIN deployments d ON d.id = s.deployment_id "
        "WHERE d.project = ? AND d.name = 'web'", lxd_project)
    assert rows == [("frontend",)]


def test_concurrent_writes_to_one_deployment_all_land(service, lxd_project):
    """50 PATCHes of distinct config keys of one deployment at once: none is lost."""
    ok(service.http.post("/1.0/deployments", params={"project": lxd_project},
                         json={"name": "shared"}), 201)
    barrier = threading.Barrier(CONCURRENCY)

    def patch(i: int) -> httpx.Response:
        with service.http_client(timeout=60.0) as http:
            http.get("/1.0")
            barrier.wait(timeout=60)
            return http.patch("/1.0/deployments/shared", params={"project": lxd_project},
                              json={"config": {f"user.k{i}": str(i)}})

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        answers = list(pool.map(patch, range(CONCURRENCY)))
    assert [a.status_code for a in answers] == [200] * CONCURRENCY
    config = ok(service.http.get("/1.0/deployments/shared",
                                 params={"project": lxd_project}))["config"]
    assert config == {f"user.k{i}": str(i) for i in range(CONCURRENCY)}

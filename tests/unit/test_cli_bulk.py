"""`shape instance launch` of several instances (names or --count, --best-effort) and
`shape scale`: the requests they send, what they print, how a failed member ends them."""

from __future__ import annotations

import httpx
import pytest

from .test_cli import FakeAPI, operation_created, run, sync

SHAPE = "/1.0/deployments/web/shapes/frontend"
INSTANCES = f"{SHAPE}/instances"


@pytest.fixture
def fake_api() -> FakeAPI:
    return FakeAPI()


def batch_created(op_id: str, granted: int, requested: int) -> httpx.Response:
    body = {"type": "async", "status": "Operation created", "status_code": 100,
            "operation": f"/1.0/operations/{op_id}",
            "metadata": {"id": op_id, "status": "Running", "status_code": 103,
                         "metadata": {"requested": requested, "granted": granted,
                                      "scaling_count": {"granted": granted}}}}
    return httpx.Response(202, json=body)


def batch_done(op_id: str, names: list[str], failed: dict[str, str] | None = None
               ) -> httpx.Response:
    failed = failed or {}
    results = {n: {"status": "Failure" if n in failed else "Success", "err": failed.get(n, "")}
               for n in names}
    err = "; ".join(f"{n}: {e}" for n, e in failed.items())
    return sync({"id": op_id, "status": "Failure" if failed else "Success",
                 "status_code": 400 if failed else 200, "err": err,
                 "metadata": {"instances": names, "results": results}})


def test_launch_count_prints_the_generated_names(fake_api: FakeAPI):
    fake_api.on("POST", INSTANCES, batch_created("b1", 2, 3))
    fake_api.on("GET", "/1.0/operations/b1/wait",
                batch_done("b1", ["web-frontend-aaaaaa", "web-frontend-bbbbbb"]))
    result = run(fake_api, "shape", "instance", "launch", "web", "frontend", "--count", "3",
                 "--best-effort")
    assert result.code == 0, result
    assert fake_api.body("POST", INSTANCES) == {"count": 3, "best_effort": True}
    assert result.err == "Launching 2 instances (of 3 asked)... done\n"
    assert result.out == "web-frontend-aaaaaa\nweb-frontend-bbbbbb\n"


def test_launch_of_several_names_is_one_batch(fake_api: FakeAPI):
    fake_api.on("POST", INSTANCES, batch_created("b2", 3, 3))
    fake_api.on("GET", "/1.0/operations/b2/wait",
                batch_done("b2", ["c1", "c2", "c3"], failed={"c2": "already exists"}))
    result = run(fake_api, "shape", "instance", "launch", "web", "frontend", "c1", "c2", "c3")
    assert fake_api.body("POST", INSTANCES) == {"instance_names": ["c1", "c2", "c3"]}
    assert result.code == 1
    assert result.err == "Launching 3 instances... \nError: c2: already exists\n"
    assert result.out == "c1\nc3\n"  # what did launch


def test_launch_misuse(fake_api: FakeAPI):
    for argv in (["--count", "2", "c1"], [], ["c1", "--best-effort"]):
        assert run(fake_api, "shape", "instance", "launch", "web", "frontend", *argv).code == 2
    assert fake_api.requests == []


def test_scale_sets_the_count(fake_api: FakeAPI):
    fake_api.on("PUT", f"{SHAPE}/scale", batch_created("s1", 4, 6))
    fake_api.on("GET", "/1.0/operations/s1/wait", batch_done("s1", ["x"]))
    result = run(fake_api, "shape", "scale", "web", "frontend", "6", "--best-effort")
    assert result.code == 0, result
    assert fake_api.body("PUT", f"{SHAPE}/scale") == {"count": 6, "best_effort": True}
    assert result.err == "Scaling web/frontend to 4 instances... done\n"
    assert result.out == ""
    assert run(fake_api, "shape", "scale", "web", "frontend", "many").code == 2


def test_single_launch_is_unchanged(fake_api: FakeAPI):
    fake_api.on("POST", INSTANCES, operation_created("op1"))
    fake_api.on("GET", "/1.0/operations/op1/wait", sync({"id": "op1", "status": "Success",
                                                          "status_code": 200}))
    result = run(fake_api, "shape", "instance", "launch", "web", "frontend", "c1")
    assert (result.code, result.out) == (0, "")
    assert fake_api.body("POST", INSTANCES) == {"instance_name": "c1"}

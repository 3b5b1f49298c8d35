"""Fuzzing the real service from its own OpenAPI document, with schemathesis.

The document is the one the running service serves (`GET /1.0/openapi.json` on its unix
socket); for every operation in it schemathesis generates requests, both fitting the
schema (positive) and breaking it (negative), and each is sent over the service's unix
socket to the real daemon process (which drives a real LXD), never in process. Every
answer must:

- not be a server error (5xx): `not_a_server_error`;
- have a documented status code and content type, and, where the document describes the
  body (LXD's error envelope on every error), match it;
- reject what breaks the schema with a 4xx (`negative_data_rejection`).

Half the requests address objects that exist (a deployment `fz` with shapes `web` and
`victim`, a placement group `pg`, a key `k`, a trusted certificate, an instance `c1`, in
the test's project), so that they reach past the 404s into validation and the core; the
other half use whatever schemathesis generates. Writes through the fuzzed requests can
only touch `victim`'s definition, not `web`'s, so that no fuzzed bound lets a launch
make many instances (and the LXD project is limited to a few instances anyway); the
objects are made again before each operation if a fuzzed request deleted or renamed
them.

The default run is short and deterministic (a few examples per operation, derandomized);
the long one generates far more, at random, only with `--long`:

    .venv/bin/python -m pytest tests/integration/test_fuzz_schema.py --long -m long
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from lxd_deployments.client import UNIX_BASE_URL
from tests.certs import make_certificate

from .helpers import API, ok, wait_operation

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
BUSYBOX = {"type": "image", "alias": "busybox"}
MAX_INSTANCES = 5  # the LXD project's limits.instances: a safety net under any fuzzing


@dataclass
class World:
    """The objects the addressed half of the requests name."""

    project: str
    fingerprint: str

    def path_parameters(self, path: str) -> dict[str, str] | None:
        """Existing objects for the operation's path parameters; None when there are
        none to give (operation ids, webhook deliveries: generated only)."""
        names = re.findall(r"{(\w+)}", path)
        values = {}
        for name in names:
            if name == "deployment":
                values[name] = "fz"
            elif name == "shape":
                values[name] = "web"
            elif name == "fingerprint":
                values[name] = self.fingerprint
            elif name == "name":
                owner = path.split("/{name}")[0].rsplit("/", 1)[-1]
                values[name] = {"deployments": "fz", "shapes": "victim", "keys": "k",
                                "instances": "c1", "placement-groups": "pg",
                                # No pet: one needs a cluster member, and this LXD is
                                # not clustered (a pet's routes answer 404 here).
                                "pets": "pt"}[owner]
            else:
                return None
        return values or None


def ensure_world(api: API, lxd, world: World) -> None:
    """(Re)make whatever of the world a fuzzed request deleted or renamed."""
    if api.get("/1.0/deployments/fz").status_code == 404:
        ok(api.post("/1.0/deployments", {"name": "fz"}), 201)
    for shape in ("web", "victim"):
        if api.get(f"/1.0/deployments/fz/shapes/{shape}").status_code == 404:
            ok(api.post("/1.0/deployments/fz/shapes", {
                "name": shape, "scaling_minimum": 0, "scaling_maximum": 2,
                "instance_template": {"source": BUSYBOX}}), 201)
    if api.get("/1.0/deployments/fz/placement-groups/pg").status_code == 404:
        ok(api.post("/1.0/deployments/fz/placement-groups", {
            "name": "pg", "policy": "spread", "rigor": "permissive"}), 201)
    if api.get("/1.0/deployments/fz/keys/k").status_code == 404:
        certificate = make_certificate("fuzz")
        ok(api.post("/1.0/deployments/fz/keys", {
            "name": "k", "certificate": certificate.pem, "role": "rw"}), 201)
        world.fingerprint = certificate.fingerprint
    instances = "/1.0/deployments/fz/shapes/web/instances"
    if api.get(f"{instances}/c1").status_code == 404 and "c1" not in lxd.states(world.project):
        answer = api.post(instances, {"instance_name": "c1"})
        if answer.status_code == 202:  # not at the maximum (fuzzed launches may fill it)
            wait_operation(api.http, answer.json()["metadata"])


def send(http, case):
    """The case as schemathesis would send it, sent over the service's unix socket."""
    kwargs = case.as_transport_kwargs(base_url=UNIX_BASE_URL)
    request = {"method": kwargs["method"], "url": kwargs["url"],
               "params": kwargs.get("params"), "headers": kwargs.get("headers")}
    if kwargs.get("cookies"):
        request["headers"] = {**(request["headers"] or {}), "Cookie": "; ".join(
            f"{name}={value}" for name, value in kwargs["cookies"].items())}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        request["content"] = kwargs["data"]
    return http.request(**request)


def fuzz_operation(http, operation, world: World, settings: hypothesis.settings) -> None:
    """Run the operation's examples; raise on the first failed check."""
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    known = world.path_parameters(operation.path)
    if known is not None or operation.path.startswith("/1.0/deployments"):
        query = ({"project": world.project}
                 if any(p.name == "project" for p in operation.query) else None)
        strategies += [operation.as_strategy(mode, path_parameters=known, query=query)
                       for mode in GenerationMode]

    @settings
    @hypothesis.given(case=st.one_of(strategies))
    def examples(case) -> None:
        response = send(http, case)
        case.validate_response(response, checks=CHECKS)

    examples()


@pytest.mark.parametrize("examples", [
    pytest.param(8, id="short"),
    pytest.param(150, id="long", marks=pytest.mark.long),
])
def test_every_operation_survives_generated_requests(service, lxd, lxd_project, examples):
    lxd.lxc("project", "set", lxd_project, f"limits.instances={MAX_INSTANCES}")
    api = API(service.http, lxd_project)
    answer = service.http.get("/1.0/openapi.json")
    assert answer.status_code == 200, answer.text
    document = answer.json()
    schema = schemathesis.openapi.from_dict(document)
    world = World(project=lxd_project, fingerprint="")
    settings = hypothesis.settings(
        max_examples=examples, deadline=None, database=None,
        derandomize=examples < 50, suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if examples >= 50 else []))
    failures = []
    operations = 0
    started = time.monotonic()
    with service.http_client(timeout=120) as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            ensure_world(api, lxd, world)
            operations += 1
            try:
                fuzz_operation(http, operation, world, settings)
            except (Exception, FailureGroup) as err:  # FailureGroup: a BaseExceptionGroup
                failures.append(f"{operation.method.upper()} {operation.path}: {err}")
    assert operations >= 40, operations  # every route of the document was fuzzed
    assert not failures, "\n\n".join(failures)
    # Everything the fuzzing launched is accounted for: LXD and the records agree.
    assert len(lxd.states(lxd_project)) <= MAX_INSTANCES
    print(f"{operations} operations fuzzed in {time.monotonic() - started:.1f} s")

"""Hand-made hostile input against the real service (over its unix socket, driving a real
LXD): malformed JSON, bodies far over the limit, odd Unicode and over-long names, wrong
types, nulls, nested junk, numbers SQLite cannot hold, odd query strings and headers.

Every answer is a 4xx in LXD's error envelope, never a 5xx (the module's service must also
log no traceback), and refused requests leave nothing behind: the store's tables and
LXD's instances are the same after each test as before it (every request here is
refused: one comparison per test keeps the suite fast). A 10 MB body is refused (413)
without the service's memory growing by anything like it.

The regression tests of bugs this suite (and the schemathesis fuzzing) found are marked
in their docstrings.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.certs import make_certificate

from .helpers import API, ok, wait_operation

STATE_TABLES = ("certificates", "deployments", "deployments_config", "deployments_keys",
                "deployments_shapes", "deployments_shapes_config",
                "deployments_shapes_instances")
BUSYBOX = {"type": "image", "alias": "busybox"}
MAX_BODY = 1024 * 1024  # the service's default max_body_bytes

DEPLOYMENT = "/1.0/deployments/dep"
SHAPE = f"{DEPLOYMENT}/shapes/web"
INSTANCES = f"{SHAPE}/instances"
# Every route that takes a body, as (method, path).
WRITES = [
    ("POST", "/1.0/deployments"),
    ("PUT", DEPLOYMENT),
    ("PATCH", DEPLOYMENT),
    ("POST", DEPLOYMENT),
    ("POST", f"{DEPLOYMENT}/shapes"),
    ("PUT", SHAPE),
    ("PATCH", SHAPE),
    ("POST", SHAPE),
    ("POST", f"{DEPLOYMENT}/keys"),
    ("PUT", f"{DEPLOYMENT}/keys/k"),
    ("PATCH", f"{DEPLOYMENT}/keys/k"),
    ("POST", f"{DEPLOYMENT}/keys/k"),
    ("POST", "/1.0/certificates"),
    ("POST", INSTANCES),
    ("POST", f"{INSTANCES}/new1"),
    ("PUT", f"{INSTANCES}/c1/state"),
]


class World:
    """A deployment `dep` with a shape `web` (0..1, at its maximum with instance `c1`)
    and a key `k`, in a project of the module's; and a way to see that nothing changed."""

    def __init__(self, service, lxd, project: str) -> None:
        self.service = service
        self.lxd = lxd
        self.project = project
        self.api = API(service.http, project)

    def build(self) -> World:
        ok(self.api.post("/1.0/deployments", {"name": "dep"}), 201)
        ok(self.api.post(f"{DEPLOYMENT}/shapes", {
            "name": "web", "scaling_minimum": 0, "scaling_maximum": 1,
            "instance_template": {"source": BUSYBOX}}), 201)
        ok(self.api.post(f"{DEPLOYMENT}/keys", {
            "name": "k", "certificate": make_certificate("k").pem, "role": "rw"}), 201)
        answer = self.api.post(INSTANCES, {"instance_name": "c1"})
        assert answer.status_code == 202, answer.text
        assert wait_operation(self.api.http, answer.json()["metadata"])["status"] == "Success"
        return self

    def snapshot(self) -> tuple:
        rows = {table: sorted(self.service.query(f"SELECT * FROM {table}"))
                for table in STATE_TABLES}
        with self.lxd.api() as lxd_api:
            answer = lxd_api.get("/1.0/instances", params={"project": self.project,
                                                           "recursion": 1})
        instances = {i["name"]: (i["status"], i["config"]) for i in answer.json()["metadata"]}
        return rows, instances

    @contextlib.contextmanager
    def unchanged(self):
        """The store's tables and LXD's instances are the same afterwards."""
        before = self.snapshot()
        yield
        assert self.snapshot() == before, "a refused request changed something"

    def send(self, method: str, path: str, *, content: bytes | str | None = None,
             params: dict | None = None, headers: dict | None = None, **kwargs):
        return self.service.http.request(
            method, path, params={"project": self.project, **(params or {})},
            content=content, headers=headers, **kwargs)

    def refused(self, method: str, path: str, statuses: set[int] | None = None, **kwargs):
        """Send, and check the answer is a refusal: a 4xx in the error envelope (one of
        `statuses` when given); the answer."""
        answer = self.send(method, path, **kwargs)
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code,
                                                  answer.text[:500])
        if statuses is not None:
            assert answer.status_code in statuses, (method, path, answer.text[:500])
        body = answer.json()
        assert body["type"] == "error" and body["error_code"] == answer.status_code, body
        return answer


_projects = itertools.count(1)


@pytest.fixture(scope="module")
def shared_world(service, lxd):
    """One world for the module (every request here is refused: none changes it)."""
    project = f"fz{os.getpid() % 10000}-{next(_projects)}"
    lxd.create_project(project)
    try:
        yield World(service, lxd, project).build()
    finally:
        lxd.delete_project(project)


@pytest.fixture
def world(shared_world):
    """The module's world, checked unchanged after each test."""
    with shared_world.unchanged():
        yield shared_world


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


MALFORMED = [
    b"{", b"}", b"[]", b"null", b'"text"', b"12", b"true", b'{"name": }', b'{"name" "x"}',
    b"{'name': 'x'}", b'{"name": "x",}', b"\xff\xfe\x00", b"\xef\xbb\xbf[",
    b'{"name": NaN}', b'{"scaling_maximum": Infinity}', b'{"scaling_maximum": 1e400}',
    b'{"name": "\\x41"}', b"[" * 100_000, b"{\"a\":" * 50_000, b"\x00" * 1000,
    b'{"name": "ok"} trailing',
]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_malformed_json_is_a_400_and_changes_nothing(world, method, path):
    # `null` is no body: where the body is optional, the launch goes on to the bound.
    statuses = {400, 409} if path == f"{INSTANCES}/new1" else {400}
    for content in MALFORMED:
        world.refused(method, path, statuses, content=content)


def test_an_empty_body_is_refused_where_one_is_needed(world):
    for method, path in WRITES:
        if path == f"{INSTANCES}/new1":  # the body is optional (the name is in the URL):
            world.refused(method, path, {409}, content=b"")  # the shape is full
        else:
            world.refused(method, path, {400}, content=b"")


def test_ten_megabytes_are_refused_with_413_without_swallowing_them(world):
    pid = world.service.process.pid
    before = rss_kib(pid)
    huge = json.dumps({"name": "huge", "description": "x" * (10 * 1024 * 1024)})
    for method, path in WRITES:
        answer = world.refused(method, path, {413}, content=huge)
        assert answer.json()["error"] == f"Request body larger than {MAX_BODY} bytes"
    # Without a Content-Length (chunked): counted as it comes, refused once over.
    chunks = (b"x" * 65536 for _ in range(160))
    answer = world.refused("POST", "/1.0/deployments", {413}, content=chunks)
    # Just under the limit is read and judged as usual (here: an unknown field).
    answer = world.refused("POST", "/1.0/deployments", {400},
                           content=json.dumps({"name": "big", "x": "y" * (MAX_BODY - 100)}))
    assert answer.json()["error"] == 'Unknown field "x"'
    grown = rss_kib(pid) - before
    assert grown < 50 * 1024, f"the service grew by {grown} KiB"


BAD_NAMES = ["", "-a", "1a", "a-", "a b", "a/b", "a.b", "a_b", "é", "名前", "a\u0000b",
             "\u202ertl", "😀", "a" * 64, "a" * 10_000, "a\nb", " a", "a\U0001f600b",
             "a\n", "web\r\n"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_bad_names_are_refused_everywhere(world, name):
    for method, path, body in [
        ("POST", "/1.0/deployments", {"name": name}),
        ("POST", DEPLOYMENT, {"name": name}),
        ("POST", f"{DEPLOYMENT}/shapes", {"name": name, "scaling_maximum": 1,
                                          "instance_template": {"source": BUSYBOX}}),
        ("POST", SHAPE, {"name": name}),
        ("POST", f"{DEPLOYMENT}/keys/k", {"name": name}),
        ("POST", INSTANCES, {"instance_name": name}),
    ]:
        world.refused(method, path, {400, 409}, content=json.dumps(body))


def test_odd_names_in_the_url_are_not_found(world):
    for name in BAD_NAMES:
        if not name:
            continue
        name = quote(name, safe="")
        for path in (f"/1.0/deployments/{name}", f"{DEPLOYMENT}/shapes/{name}",
                     f"{DEPLOYMENT}/keys/{name}", f"{INSTANCES}/{name}",
                     f"/1.0/certificates/{name}", f"/1.0/operations/{name}"):
            answer = world.send("GET", path)
            assert answer.status_code in (400, 404), (path, answer.text)
    for path in ("/1.0/deployments/%00", "/1.0/deployments/%ED%A0%80", "/1.0/deployments/%2E%2E",
                 "/1.0/deployments/%2e%2e/%2e%2e/etc/passwd", "/1.0/deployments/a%2Fb"):
        assert world.send("GET", path).status_code in (400, 404), path
        world.refused("DELETE", path, {400, 404, 405})


WRONG_SHAPES = [
    {"scaling_minimum": "1"}, {"scaling_minimum": 1.5}, {"scaling_minimum": True},
    {"scaling_minimum": []}, {"scaling_minimum": {}}, {"scaling_maximum": -1},
    {"scaling_maximum": 2**63}, {"scaling_maximum": 2**64}, {"scaling_minimum": -(2**63) - 1},
    {"scaling_minimum": 5, "scaling_maximum": 2}, {"scaling_minimum": 0, "scaling_maximum": 0},
    {"config": []}, {"config": "x"}, {"config": {"user.a": 1}}, {"config": {"user.a": None}},
    {"config": {"user.a": {"b": "c"}}}, {"config": {"limits.cpu": "2"}}, {"config": {"": "x"}},
    {"description": 1}, {"description": ["x"]}, {"instance_template": []},
    {"instance_template": "busybox"}, {"instance_template": {"source": "busybox"}},
    {"instance_template": {"source": {"type": "image"}}},
    {"instance_template": {"source": {"type": "image", "alias": "no-such-image"}}},
    {"instance_template": {"source": {"type": "image", "alias": ["busybox"]}}},
    {"instance_template": {"source": BUSYBOX, "profiles": ["no-such-profile"]}},
    {"instance_template": {"source": BUSYBOX, "profiles": "default"}},
    {"instance_template": {"source": BUSYBOX, "devices": {"d": "x"}}},
    {"instance_template": {"source": BUSYBOX, "devices": {"d": {"k": 1}}}},
    {"instance_template": {"source": BUSYBOX, "devices": {"d": {"k": {"deep": [1, {}]}}}}},
    {"instance_template": {"source": BUSYBOX, "type": "vm"}},
    {"instance_template": {"source": BUSYBOX, "ephemeral": "yes"}},
    {"instance_template": {"source": BUSYBOX, "unknown": 1}},
    {"instance_template": {"source": {**BUSYBOX, "server": "http://x", "protocol": "lxd"}}},
    {"unknown": None}, {"name": None},
]


@pytest.mark.parametrize("fields", WRONG_SHAPES, ids=range(len(WRONG_SHAPES)))
def test_wrong_types_and_values_of_a_shape_are_refused(world, fields):
    body = {"name": "new", "scaling_maximum": 1, "instance_template": {"source": BUSYBOX},
            **fields}
    world.refused("POST", f"{DEPLOYMENT}/shapes", {400}, content=json.dumps(body))
    if "name" in fields:  # the rest would be a valid PUT or PATCH
        return
    put = {"scaling_maximum": 1, "instance_template": {"source": BUSYBOX}, **fields}
    world.refused("PUT", SHAPE, {400, 409}, content=json.dumps(put))
    patch = {k: v for k, v in fields.items() if v is not None}
    if patch:
        world.refused("PATCH", SHAPE, {400, 409}, content=json.dumps(patch))


WRONG_OTHERS = [
    ("POST", "/1.0/deployments", {"name": "d2", "governor_webhook_url": "ftp://x"}),
    ("POST", "/1.0/deployments", {"name": "d2", "governor_webhook_url": 1}),
    ("POST", "/1.0/deployments", {"name": "d2", "config": {"user.x": None}}),
    ("PUT", DEPLOYMENT, {"description": None}),
    ("PATCH", DEPLOYMENT, {"config": {"nope.key": "x"}}),
    ("POST", f"{DEPLOYMENT}/keys", {"name": "k2"}),
    ("POST", f"{DEPLOYMENT}/keys", {"name": "k2", "certificate": "not a certificate"}),
    ("POST", f"{DEPLOYMENT}/keys", {"name": "k2", "certificate_fingerprint": "ab" * 32}),
    ("POST", f"{DEPLOYMENT}/keys", {"name": "k2", "certificate": "x", "role": "root"}),
    ("PATCH", f"{DEPLOYMENT}/keys/k", {"role": None, "description": 5}),
    ("POST", "/1.0/certificates", {"certificate": "ééé"}),
    ("POST", "/1.0/certificates", {"certificate": "-----BEGIN CERTIFICATE-----\nx"}),
    ("POST", "/1.0/certificates", {"certificate": "AAAA", "type": "admin"}),
    ("POST", "/1.0/certificates", {"certificate": None}),
    ("POST", INSTANCES, {"instance_name": None}),
    ("POST", INSTANCES, {"instance_name": 5}),
    ("POST", INSTANCES, {"instance_name": "c2", "shape_name": "other"}),
    ("POST", INSTANCES, {"count": 2**64}),
    ("POST", INSTANCES, {"count": -1}),
    ("POST", INSTANCES, {"instance_names": "c2"}),
    ("POST", INSTANCES, {"instance_names": [1, 2]}),
    ("PUT", f"{INSTANCES}/c1/state", {"action": "explode"}),
    ("PUT", f"{INSTANCES}/c1/state", {"action": "stop", "timeout": "x"}),
    ("PUT", f"{INSTANCES}/c1/state", {"action": "stop", "force": "yes"}),
    ("PUT", f"{SHAPE}/scale", {"count": "2"}),
    ("PUT", f"{SHAPE}/scale", {"count": 2**64}),
    ("POST", f"{SHAPE}/scale-requests", {"count": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRONG_OTHERS,
                         ids=[f"{m} {p.rsplit('/', 1)[-1]} {i}"
                              for i, (m, p, _) in enumerate(WRONG_OTHERS)])
def test_wrong_types_and_values_elsewhere_are_refused(world, method, path, body):
    world.refused(method, path, {400, 404, 409}, content=json.dumps(body))


def test_lone_surrogates_are_a_400(world):
    """Regression: JSON may escape half a UTF-16 pair (`"\\ud800"`); the service stored
    it and failed (500, UnicodeEncodeError)."""
    for method, path, text in [
        ("POST", "/1.0/deployments", '{"name": "d2", "description": "\\ud800"}'),
        ("POST", "/1.0/deployments", '{"name": "d2", "config": {"user.\\udfff": "x"}}'),
        ("PATCH", DEPLOYMENT, '{"description": "a\\udc00b"}'),
        ("POST", f"{DEPLOYMENT}/shapes", '{"name": "s2", "scaling_maximum": 1, '
         '"instance_template": {"source": {"type": "image", "alias": "\\ud83d"}}}'),
        ("PATCH", SHAPE, '{"instance_template": {"config": {"user.a": "\\ude00"}}}'),
        ("POST", "/1.0/certificates", '{"certificate": "\\ud800"}'),
        ("POST", INSTANCES, '{"instance_name": "\\ud800"}'),
    ]:
        answer = world.refused(method, path, {400}, content=text)
        assert "lone surrogate" in answer.json()["error"], answer.text
    # A proper pair is fine (here: refused as a name, not as text).
    world.refused("POST", "/1.0/deployments", {400}, content='{"name": "\\ud83d\\ude00"}')


def test_integers_sqlite_cannot_hold_are_a_400(world):
    """Regression: a scaling bound or a `since` past 64 bits overflowed in SQLite (500)."""
    for value in (2**63, 2**64, 10**30, -(2**63) - 1):
        answer = world.refused("POST", f"{DEPLOYMENT}/shapes", {400}, content=json.dumps({
            "name": "s2", "scaling_maximum": value, "instance_template": {"source": BUSYBOX}}))
        assert '"scaling_' in answer.json()["error"], answer.text
        world.refused("PATCH", SHAPE, {400}, content=json.dumps({"scaling_minimum": value}))
    for path in (f"{DEPLOYMENT}/changes", "/1.0/audit"):
        answer = world.send("GET", path, params={"since": 2**63})
        assert answer.status_code == 400, answer.text
        assert ok(world.send("GET", path, params={"since": 2**63 - 1})) == []


def test_a_certificate_that_is_not_ascii_is_a_400(world):
    """Regression (found by the schemathesis fuzzing): base64 of non-ASCII text raised
    ValueError, a 500."""
    answer = world.refused("POST", "/1.0/certificates", {400},
                           content=json.dumps({"certificate": "\u00c6\u00ab=="}))
    assert answer.json()["error"] == ("Invalid certificate: expected PEM or base64-encoded "
                                      "DER")


def test_odd_query_strings_and_headers(world):
    for params in ({"recursion": "abc"}, {"recursion": "99"}, {"recursion": "-1"},
                   {"recursion": "1.5"}, {"project": ""}, {"project": "a" * 64}):
        answer = world.send("GET", "/1.0/deployments", params=params)
        assert 400 <= answer.status_code < 500, (params, answer.text)
    for project in ("é", "no-such-project", "a b", "\u0000"):
        answer = world.send("GET", "/1.0/deployments", params={"project": project})
        assert answer.status_code in (200, 400, 403, 404), (project, answer.text)
    for params in ({"limit": "0"}, {"limit": "10001"}, {"since": "-1"}, {"since": "x"}):
        assert world.send("GET", f"{DEPLOYMENT}/changes", params=params).status_code == 400
        assert world.send("GET", "/1.0/audit", params=params).status_code == 400
    for timeout in ("inf", "nan", "1e400", "-2", "x"):
        answer = world.send("GET", "/1.0/operations/nope/wait", params={"timeout": timeout})
        assert answer.status_code in (400, 404), (timeout, answer.text)
    for value in (b"\"x\"", b"\xff\xfe", b"W/\"1\"", b"x" * 4000):
        world.refused("PUT", SHAPE, {400, 412}, content=json.dumps({"scaling_maximum": 1}),
                      headers={"If-Match": value})
    # A header block of 200 kB: answered (or refused by the HTTP parser), never a crash.
    answer = world.send("GET", "/1.0/deployments", headers={"X-Junk": "x" * 200_000})
    assert answer.status_code < 500, answer.status_code
    assert world.send("GET", "/1.0").status_code == 200
    answer = world.send("PROPFIND", "/1.0/deployments")
    assert answer.status_code == 405, answer.text

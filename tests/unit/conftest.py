"""Unit fixtures: the real app and store in process, LXD replaced by `FakeLXD`."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from lxd_deployments.api import create_app
from lxd_deployments.auth import Listener
from lxd_deployments.auth.middleware import ListenerApp
from lxd_deployments.core import Core
from lxd_deployments.webhooks.events import EventBus
from tests.certs import make_certificate

from .fake_lxd import FakeLXD


@pytest.fixture
def fake_lxd() -> FakeLXD:
    return FakeLXD()


@pytest.fixture
def core(database, fake_lxd) -> Core:
    """The core on the store the test runs on (`database`: see --store in
    tests/conftest.py), which closes it."""
    return Core(db=database, lxd=fake_lxd)


def admin_app(core: Core, **options):
    """The app as the admin unix socket serves it (every caller an admin)."""
    return ListenerApp(create_app(core, **options), Listener.UNIX)


@pytest.fixture
def api(core) -> TestClient:
    with TestClient(admin_app(core, max_body_bytes=64 * 1024)) as client:
        yield client


def error_of(response) -> tuple[int, str]:
    """The HTTP status and message of an error envelope (asserting it is one)."""
    body = response.json()
    assert body["type"] == "error", body
    assert body["error_code"] == response.status_code
    return response.status_code, body["error"]


# --- small helpers shared by the API tests ----------------------------------------------

def project_params(project: str | None) -> dict[str, str] | None:
    """The `?project=` query of a request, or none for the default project."""
    return {"project": project} if project else None


def create_deployment(api, name: str = "dep1", project: str | None = None, **fields):
    return api.post("/1.0/deployments", params=project_params(project),
                    json={"name": name, **fields})


def create_shape(api, deployment: str = "dep1", name: str = "web", project: str | None = None,
                 **fields):
    """POST a shape; bounds default to 0..2 so that only the fields under test vary."""
    body = {"name": name, "scaling_minimum": 0, "scaling_maximum": 2, **fields}
    return api.post(f"/1.0/deployments/{deployment}/shapes", params=project_params(project),
                    json=body)


def trust_certificate(api, type_: str = "deployments", name: str = ""):
    """Add a fresh certificate to the trust store; return it (pem, key, fingerprint)."""
    certificate = make_certificate()
    response = api.post("/1.0/certificates", json={
        "certificate": certificate.pem, "type": type_, "name": name})
    assert response.status_code == 201, response.json()
    return certificate


def certificates_sharing_a_prefix():
    """Two fresh certificates whose fingerprints start with the same hex digit."""
    by_first_digit = {}
    while True:
        certificate = make_certificate()
        earlier = by_first_digit.setdefault(certificate.fingerprint[0], certificate)
        if earlier is not certificate:
            return earlier, certificate


def launch_instance(api, deployment: str, shape: str, name: str,
                    project: str | None = None) -> dict:
    """Launch through the governor route and wait; return the finished operation."""
    response = api.post(f"/1.0/deployments/{deployment}/shapes/{shape}/instances",
                        params=project_params(project), json={"instance_name": name})
    assert response.status_code == 202, response.json()
    path, _, query = response.json()["operation"].partition("?")
    assert query == ("" if project in (None, "default") else f"project={project}")
    operation = api.get(f"{path}/wait", params={"timeout": 10, **(project_params(project) or {})})
    assert operation.json()["metadata"]["status"] == "Success", operation.json()
    return operation.json()["metadata"]


# Tables that record requests rather than state: a refused attempt is written there.
LOG_TABLES = ("audit_log",)


def store_snapshot(core: Core) -> dict[str, list[tuple]]:
    """Every row of every table (but the audit log, which records refused attempts too),
    to show that a refused request changed nothing."""
    with core.db.read() as conn:
        tables = [name for name in sorted(inspect(conn).get_table_names())
                  if name not in LOG_TABLES]
        return {table: sorted(tuple(row) for row in conn.exec_driver_sql(
            f"SELECT * FROM {table}")) for table in tables}


@pytest.fixture
def unchanged(core):
    """Call as a context manager around a refused request: the store must not change."""
    @contextmanager
    def check():
        before = store_snapshot(core)
        yield
        assert store_snapshot(core) == before

    return check


@pytest.fixture
def refused(api, unchanged):
    """`refused(send, status, message)`: `send(api)` must get this error, writing nothing."""
    def check(send, status: int, message: str) -> None:
        with unchanged():
            assert error_of(send(api)) == (status, message)

    return check


# --- callers over HTTPS (the auth tests) --------------------------------------------------

class AsPeer:
    """Requests as the HTTPS listener sees them: `pem` is the client certificate."""

    def __init__(self, app, pem: str | None, listener: Listener = Listener.HTTPS) -> None:
        self.app = ListenerApp(app, listener)
        self.pem = pem

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            chain = [self.pem] if self.pem else []
            scope["extensions"] = {**(scope.get("extensions") or {}),
                                   "tls": {"client_cert_chain": chain}}
        await self.app(scope, receive, send)


@pytest.fixture
def clients(core):
    """`clients(certificate=None, **create_app_options)`: a TestClient as that peer."""
    with ExitStack() as stack:
        def make(certificate=None, listener: Listener = Listener.HTTPS, **options):
            app = AsPeer(create_app(core, **options),
                         certificate.pem if certificate else None, listener)
            return stack.enter_context(TestClient(app))
        yield make


def trust_as(api, name: str, type_: str = "deployments"):
    certificate = make_certificate(name)
    response = api.post("/1.0/certificates", json={
        "certificate": certificate.pem, "type": type_, "name": name})
    assert response.status_code == 201, response.json()
    return certificate


def give_key(api, deployment: str, key: str, certificate, role: str):
    response = api.post(f"/1.0/deployments/{deployment}/keys", json={
        "name": key, "certificate_fingerprint": certificate.fingerprint, "role": role})
    assert response.status_code == 201, response.json()


@pytest.fixture
def world(api, clients):
    """Deployments web and shop, each with a shape `front` (0..3); an admin certificate;
    governors: `rw` and `ro` keys on web, an `rw` key on shop."""
    for deployment in ("web", "shop"):
        assert api.post("/1.0/deployments", json={"name": deployment}).status_code == 201
        response = api.post(f"/1.0/deployments/{deployment}/shapes", json={
            "name": "front", "scaling_minimum": 0, "scaling_maximum": 3,
            "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
        assert response.status_code == 201, response.json()
    admin = trust_as(api, "admin", "client")
    rw, ro, shop = trust_as(api, "gov-rw"), trust_as(api, "gov-ro"), trust_as(api, "gov-shop")
    give_key(api, "web", "autoscaler", rw, "rw")
    give_key(api, "web", "watcher", ro, "ro")
    give_key(api, "shop", "shopper", shop, "rw")
    return SimpleNamespace(admin=clients(admin), rw=clients(rw), ro=clients(ro),
                           shop=clients(shop), anonymous=clients(None),
                           certificates=SimpleNamespace(admin=admin, rw=rw, ro=ro, shop=shop))


@pytest.fixture
def nothing_changes(core, fake_lxd):
    """Around refused requests: no row (but audit rows) and no LXD instance changes."""
    class Check:
        def __enter__(self):
            self.store = store_snapshot(core)
            self.instances = dict(fake_lxd.instances)

        def __exit__(self, *exc):
            if exc[0] is None:
                assert store_snapshot(core) == self.store
                assert fake_lxd.instances == self.instances
    return Check()


@pytest.fixture
def ecore(database, fake_lxd) -> Core:
    """A core with an event bus (what webhooks and the events stream see), for the
    tests of events; on the store the test runs on (`database`, which closes it)."""
    core = Core(db=database, lxd=fake_lxd, events=EventBus(database))
    yield core
    core.operations.shutdown()

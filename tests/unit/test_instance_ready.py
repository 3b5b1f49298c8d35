"""An instance says "ready" itself, by its one-time readiness token, on the in-instance
socket: what a launch hands it, and who may (and may not) use that token where."""

from __future__ import annotations

import hashlib
import shlex
import time

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from lxd_deployments.api import create_app
from lxd_deployments.auth import Listener, instance_token
from lxd_deployments.auth.middleware import ListenerApp
from lxd_deployments.config import AuditSettings
from lxd_deployments.core import Core, instance_ready, lifecycle, warm_pool
from lxd_deployments.core.instances import settle_due_hooks
from lxd_deployments.errors import InvalidInput
from lxd_deployments.store import instances as records
from lxd_deployments.store import open_database

from .conftest import error_of

SHAPE = "/1.0/deployments/dep/shapes/web"
READY = {lifecycle.LAUNCH_TIMEOUT_KEY: "600", lifecycle.READY_SOCKET_KEY: "tcp:127.0.0.1:8470"}
CONTINUE = {"action": "continue"}


pytestmark = pytest.mark.both_stores


@pytest.fixture
def core(database, fake_lxd, tmp_path) -> Core:
    """A core whose service serves an in-instance socket (as with `jwt.enabled`), on the
    store the test runs on."""
    return Core(db=database, lxd=fake_lxd, instance_socket=str(tmp_path / "instance.socket"))


def socket_client(core: Core, **options) -> TestClient:
    """Requests as the in-instance socket receives them (through an LXD proxy)."""
    return TestClient(ListenerApp(create_app(core, **options), Listener.INSTANCE))


@pytest.fixture
def inside(core):
    with socket_client(core) as client:
        yield client


def make_shape(api, config: dict | None = None, instance_type: str = "container"):
    assert api.post("/1.0/deployments", json={"name": "dep"}).status_code == 201
    return api.post("/1.0/deployments/dep/shapes", json={
        "name": "web", "scaling_minimum": 0, "scaling_maximum": 4,
        "config": READY if config is None else config,
        "instance_template": {"type": instance_type,
                              "source": {"type": "image", "alias": "busybox"}}})


def status_of(core, name: str) -> str | None:
    with core.db.read() as conn:
        record = records.find(conn, "default", name)
    return None if record is None else record.status


def launching(api, core, name: str) -> str:
    """Launch `name` and wait until it is in its launching hook; its operation id."""
    answer = api.post(f"{SHAPE}/instances", json={"instance_name": name})
    assert answer.status_code == 202, answer.json()
    deadline = time.monotonic() + 10
    while status_of(core, name) != records.LAUNCHING:
        assert time.monotonic() < deadline, status_of(core, name)
        time.sleep(0.01)
    return answer.json()["metadata"]["id"]


def ready_file(fake_lxd, name: str) -> tuple[dict[str, str], int]:
    content, mode = fake_lxd.instances[("default", name)]["files"][instance_ready.READY_FILE]
    values = {}
    for line in content.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = shlex.split(value)[0]
    return values, mode


def token_of(fake_lxd, name: str) -> str:
    return ready_file(fake_lxd, name)[0]["LXD_DEPLOYMENTS_READY_TOKEN"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def say_ready(inside, token: str, name: str, action: str = "continue"):
    return inside.post(f"{SHAPE}/instances/{name}/lifecycle", json={"action": action},
                       headers=bearer(token))


# --- what a launch hands the instance -----------------------------------------------------

def test_a_launch_gives_the_instance_a_socket_and_a_file_and_stores_only_a_hash(
        api, core, fake_lxd):
    assert make_shape(api).status_code == 201
    launching(api, core, "a")
    instance = fake_lxd.instances[("default", "a")]
    assert instance["devices"][instance_ready.DEVICE_NAME] == {
        "type": "proxy", "bind": "instance", "listen": "tcp:127.0.0.1:8470",
        "connect": f"unix:{core.instance_socket}"}
    values, mode = ready_file(fake_lxd, "a")
    assert mode == 0o600
    assert values["LXD_DEPLOYMENTS_READY_SOCKET"] == "tcp:127.0.0.1:8470"
    assert values["LXD_DEPLOYMENTS_READY_URL"] == f"{SHAPE}/instances/a/lifecycle?project=default"
    token = values["LXD_DEPLOYMENTS_READY_TOKEN"]
    record_id, secret = instance_token.parse(token)
    with core.db.read() as conn:
        stored = records.ready_token_owner(conn, record_id)
    assert stored.instance == "a"
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(stored) and stored.token_hash not in repr(stored)
    # Nothing of the token reaches the instance's config (shown to every key).
    assert not any(secret in value for value in instance["config"].values())


def test_a_unix_socket_is_root_only_in_the_instance(api, core, fake_lxd):
    config = {**READY, lifecycle.READY_SOCKET_KEY: "unix:/dev/lxd-ready.sock"}
    assert make_shape(api, config).status_code == 201
    launching(api, core, "a")
    device = fake_lxd.instances[("default", "a")]["devices"][instance_ready.DEVICE_NAME]
    assert device["listen"] == "unix:/dev/lxd-ready.sock"
    assert (device["uid"], device["gid"], device["mode"]) == ("0", "0", "0600")


def test_without_a_launching_hook_or_the_option_no_token_is_made(api, core, fake_lxd):
    assert make_shape(api, {lifecycle.READY_SOCKET_KEY: "tcp:127.0.0.1:8470"}).status_code \
        == 201
    answer = api.post(f"{SHAPE}/instances", json={"instance_name": "a"}).json()["metadata"]
    ended = api.get(f"/1.0/operations/{answer['id']}/wait", params={"timeout": 10}).json()
    assert ended["metadata"]["status"] == "Success"
    assert "files" not in fake_lxd.instances[("default", "a")]
    assert instance_ready.DEVICE_NAME not in fake_lxd.instances[("default", "a")].get(
        "devices", {})


@pytest.mark.parametrize("address", [
    "tcp:0.0.0.0:8470", "tcp:127.0.0.1:0", "tcp:127.0.0.1:70000", "unix:relative",
    "unix:/a/../b", "unix:/" + "a" * 120, "udp:127.0.0.1:53", "true"])
def test_bad_socket_addresses_are_refused(address):
    with pytest.raises(InvalidInput, match=r"lifecycle\.ready_socket"):
        lifecycle.check_config({lifecycle.READY_SOCKET_KEY: address})


def test_a_vm_shape_or_a_service_without_the_socket_cannot_ask_for_it(api, core, tmp_path,
                                                                      fake_lxd):
    fake_lxd.image_types[("default", "busybox")] = "virtual-machine"
    code, message = error_of(make_shape(api, instance_type="virtual-machine"))
    assert code == 400 and "containers" in message
    bare = Core(db=open_database(tmp_path / "bare.sqlite3"), lxd=fake_lxd)
    try:
        with pytest.raises(InvalidInput, match="in-instance socket"):
            instance_ready.check_shape(bare, READY, "container")
    finally:
        bare.db.close()


# --- the token's one use --------------------------------------------------------------

def test_the_instance_says_ready_and_its_launch_ends(api, core, fake_lxd, inside):
    assert make_shape(api).status_code == 201
    op_id = launching(api, core, "a")
    token = token_of(fake_lxd, "a")
    answer = say_ready(inside, token, "a")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["metadata"] == {"status": records.LAUNCHING, "result": "continue"}
    assert settle_due_hooks(core) == 1
    ended = api.get(f"/1.0/operations/{op_id}/wait", params={"timeout": 10}).json()
    assert ended["metadata"]["status"] == "Success"
    assert ended["metadata"]["metadata"]["lifecycle_result"] == "continue"
    assert status_of(core, "a") == records.READY
    audit = api.get("/1.0/audit", params={"recursion": 1}).json()["metadata"]
    said = [row for row in audit if row["path"].endswith("/instances/a/lifecycle")]
    assert said and said[0]["auth_method"] == "instance-token"
    assert said[0]["identity"] == "instance default/a"


@pytest.fixture
def two(api, core, fake_lxd):
    assert make_shape(api).status_code == 201
    ops = {name: launching(api, core, name) for name in ("a", "b")}
    return ops, {name: token_of(fake_lxd, name) for name in ops}


def test_a_wrong_secret_is_refused(two, inside):
    _, tokens = two
    record_id, secret = instance_token.parse(tokens["a"])
    forged = f"ldr1.{record_id}.{'A' * len(secret)}"
    code, message = error_of(say_ready(inside, forged, "a"))
    assert code == 401 and "unknown, used or revoked" in message


def test_another_instances_token_cannot_say_it(two, inside, core):
    _, tokens = two
    code, message = error_of(say_ready(inside, tokens["b"], "a"))
    assert code == 403 and "/instances/b/lifecycle" in message
    assert status_of(core, "a") == records.LAUNCHING
    # b's token still works for b: a refusal spends no token.
    assert say_ready(inside, tokens["b"], "b").status_code == 200


def test_a_token_works_once(two, inside, core):
    _, tokens = two
    assert say_ready(inside, tokens["a"], "a").status_code == 200
    code, message = error_of(say_ready(inside, tokens["a"], "a"))
    assert code == 401 and "unknown, used or revoked" in message


def test_a_token_is_revoked_when_the_governor_settles_the_hook(two, api, inside, core):
    _, tokens = two
    assert api.post(f"{SHAPE}/instances/a/lifecycle", json=CONTINUE).status_code == 200
    assert settle_due_hooks(core) == 1
    assert status_of(core, "a") == records.READY
    assert error_of(say_ready(inside, tokens["a"], "a"))[0] == 401


def test_a_token_dies_with_its_instance(two, api, inside, core):
    ops, tokens = two
    assert api.post(f"{SHAPE}/instances/a/lifecycle",
                    json={"action": "abandon"}).status_code == 200
    assert settle_due_hooks(core) == 1
    ended = api.get(f"/1.0/operations/{ops['a']}/wait", params={"timeout": 10}).json()
    assert ended["metadata"]["status"] == "Failure"
    assert status_of(core, "a") is None
    code, message = error_of(say_ready(inside, tokens["a"], "a"))
    assert code == 401 and "unknown, used or revoked" in message


def test_a_token_says_only_continue(two, inside, core):
    _, tokens = two
    for action in ("abandon", "heartbeat"):
        code, message = error_of(say_ready(inside, tokens["a"], "a", action))
        assert code == 403 and "only \"continue\"" in message
    assert status_of(core, "a") == records.LAUNCHING
    assert say_ready(inside, tokens["a"], "a").status_code == 200


def test_a_token_reaches_no_other_route(two, inside):
    _, tokens = two
    headers = bearer(tokens["a"])
    for method, path in [("GET", f"{SHAPE}/instances/a/lifecycle"),
                         ("GET", f"{SHAPE}/instances/a"), ("DELETE", f"{SHAPE}/instances/a"),
                         ("PUT", f"{SHAPE}/instances/a/protection"),
                         ("GET", "/1.0/operations"), ("GET", "/1.0/deployments"),
                         ("POST", "/1.0/deployments/dep/shapes/web/instances")]:
        answer = inside.request(method, path, headers=headers, json={"protected": True})
        assert error_of(answer)[0] == 403, (method, path)
    # Nor the events stream (a websocket): the same 403, as the handshake's answer.
    with pytest.raises(WebSocketDenialResponse) as refused, \
            inside.websocket_connect("/1.0/events", headers=headers):
        pass
    assert refused.value.status_code == 403
    assert say_ready(inside, tokens["a"], "a").status_code == 200


def test_a_token_is_refused_off_the_in_instance_socket(two, clients):
    _, tokens = two
    code, message = error_of(clients(None, Listener.HTTPS).post(
        f"{SHAPE}/instances/a/lifecycle", json=CONTINUE, headers=bearer(tokens["a"])))
    assert code == 401 and "only accepted on the in-instance socket" in message


def test_an_answer_before_the_hook_begins_keeps_the_token(api, core, fake_lxd, inside):
    """Between its start and its hook the record is `pending`: 409, and a retry works."""
    assert make_shape(api).status_code == 201
    op_id = launching(api, core, "a")
    token = token_of(fake_lxd, "a")
    record_id = instance_token.parse(token)[0]
    with core.db.write() as conn:
        records.set_status(conn, record_id, records.PENDING)
    assert error_of(say_ready(inside, token, "a"))[0] == 409
    with core.db.write() as conn:
        records.set_status(conn, record_id, records.LAUNCHING)
    assert say_ready(inside, token, "a").status_code == 200
    assert settle_due_hooks(core) == 1
    assert api.get(f"/1.0/operations/{op_id}/wait",
                   params={"timeout": 10}).json()["metadata"]["status"] == "Success"


@pytest.mark.parametrize("token", ["ldr1.", "ldr1.1.short", "ldr1.x." + "A" * 43,
                                   "ldr1.1." + "A" * 200])
def test_malformed_and_oversized_tokens_are_refused(two, inside, token):
    code, message = error_of(say_ready(inside, token, "a"))
    assert code == 401 and "invalid readiness token" in message


def test_refused_tokens_spend_a_budget_and_the_right_one_still_works(two, core, fake_lxd):
    _, tokens = two
    record_id, secret = instance_token.parse(tokens["a"])
    forged = f"ldr1.{record_id}.{'A' * len(secret)}"
    settings = AuditSettings(refused_rate=0.001, refused_burst=3)
    with socket_client(core, audit_settings=settings) as inside:
        answers = [say_ready(inside, forged, "a") for _ in range(5)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
        assert int(answers[-1].headers["Retry-After"]) > 0
        assert "Too many refused readiness tokens" in error_of(answers[-1])[1]
        # Another record's bucket is its own; and the rightful token is still checked
        # first, so no flood locks the instance out.
        assert say_ready(inside, tokens["b"], "b").status_code == 200
        assert say_ready(inside, tokens["a"], "a").status_code == 200


def test_a_warm_instance_gets_its_token_and_socket_when_taken(api, core, fake_lxd, inside):
    assert make_shape(api, {**READY, lifecycle.WARM_POOL_SIZE_KEY: "1"}).status_code == 201
    assert warm_pool.refill(core) == 1
    (pooled,) = [name for (_, name) in fake_lxd.instances]
    assert "files" not in fake_lxd.instances[("default", pooled)]  # none before its launch
    launching(api, core, "a")
    assert ("default", pooled) not in fake_lxd.instances  # renamed into "a"
    assert instance_ready.DEVICE_NAME in fake_lxd.instances[("default", "a")]["devices"]
    assert say_ready(inside, token_of(fake_lxd, "a"), "a").status_code == 200


def test_a_token_outlives_a_restart_of_the_service(api, core, fake_lxd, inside):
    """The hash is in the store: after a restart (no waiting operation) the instance's
    answer still settles its hook."""
    assert make_shape(api).status_code == 201
    launching(api, core, "a")
    token = token_of(fake_lxd, "a")
    assert core.hooks.take(instance_token.parse(token)[0]) is not None  # as after a restart
    assert say_ready(inside, token, "a").status_code == 200
    assert settle_due_hooks(core) == 1
    assert status_of(core, "a") == records.READY

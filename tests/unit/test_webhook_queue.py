"""The durable delivery queue and the deliverer: attempts, backoff, final failure, restart
and redelivery, with the receiver played by an `httpx.MockTransport` and a fake clock."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from lxd_deployments.api import create_app
from lxd_deployments.auth.caller import Listener
from lxd_deployments.auth.middleware import ListenerApp
from lxd_deployments.core import Core
from lxd_deployments.core.event_bus import EventBus
from lxd_deployments.store import repository as repo
from lxd_deployments.store import webhook_deliveries as queue
from lxd_deployments.store import webhook_secrets as secret_store
from lxd_deployments.webhooks.deliverer import Deliverer, backoff_delay
from lxd_deployments.webhooks.settings import WebhookSettings
from lxd_deployments.webhooks.signing import HEADER_DELIVERY, HEADER_EVENT, verify

from . import payloads

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

URL = "http://governor.example/hooks"
SETTINGS = WebhookSettings(max_attempts=3, backoff_initial=1.0, backoff_max=3.0,
                           backoff_jitter=0.0, timeout=1.0, workers=1)


class Clock:
    def __init__(self) -> None:
        self.now = time.time() + 1  # ahead of what was queued just before

    def __call__(self) -> float:
        return self.now


class Receiver:
    """Answers with the next scripted status (or raises), recording every request."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, text="" if answer < 300 else "receiver unhappy")


@pytest.fixture
def db(database):
    return database


@pytest.fixture
def deployment(db) -> int:
    with db.write() as conn:
        return repo.insert_deployment(conn, "default", "web", "", URL, {})


def make(db, receiver, clock) -> tuple[Deliverer, httpx.Client]:
    deliverer = Deliverer(db, SETTINGS, transport=httpx.MockTransport(receiver), clock=clock)
    return deliverer, deliverer.client()


def publish(db, deployment_id: int, type_: str = "scale-request") -> str:
    bus = EventBus(db, max_attempts=SETTINGS.max_attempts)
    event = bus.publish(deployment_id, payloads.BY_TYPE[type_]())
    with db.read() as conn:
        return next(d.uuid for d in queue.list_for(conn, deployment_id)
                    if d.event_id == event.id)


def delivery(db, deployment_id: int, delivery_id: str) -> queue.DeliveryRow:
    with db.read() as conn:
        return queue.get(conn, deployment_id, delivery_id)


def test_backoff_doubles_up_to_its_cap_with_bounded_jitter():
    settings = WebhookSettings(backoff_initial=2, backoff_max=10, backoff_jitter=0.5)

    assert [backoff_delay(n, settings, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == \
        [2, 4, 8, 10, 10]
    assert backoff_delay(1, settings, rand=lambda: 1.0) == 3.0


def test_a_delivery_is_signed_with_the_deployments_secret_and_recorded(db, deployment):
    receiver, clock = Receiver(204), Clock()
    deliverer, client = make(db, receiver, clock)
    delivery_id = publish(db, deployment)

    assert deliverer.run_once(client) is True
    assert deliverer.run_once(client) is False  # nothing else due

    (request,) = receiver.requests
    with db.read() as conn:
        secret = secret_store.find(conn, deployment).secret
    assert verify(secret, request.headers, request.content, now=clock.now)
    assert request.headers[HEADER_DELIVERY] == delivery_id
    assert request.headers[HEADER_EVENT] == "scale-request"
    assert str(request.url) == URL
    body = json.loads(request.content)
    assert (body["type"], body["class"], body["deployment"], body["metadata"]["count"]) == \
        ("scale-request", "scaling", "web", 2)
    row = delivery(db, deployment, delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error, row.last_url) == \
        ("delivered", 1, 204, "", URL)
    assert row.finished_at


def test_failed_attempts_back_off_then_end_failed(db, deployment):
    receiver = Receiver(500, httpx.ConnectError("connection refused"), 503)
    clock = Clock()
    deliverer, client = make(db, receiver, clock)
    delivery_id = publish(db, deployment)

    assert deliverer.run_once(client)
    row = delivery(db, deployment, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
    assert row.last_error == "HTTP 500: receiver unhappy"
    assert row.next_attempt_at == pytest.approx(clock.now + 1.0)

    assert not deliverer.run_once(client)  # not due yet
    clock.now += 1.0
    assert deliverer.run_once(client)
    row = delivery(db, deployment, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 2, None)
    assert row.last_error == "ConnectError: connection refused"
    assert row.next_attempt_at == pytest.approx(clock.now + 2.0)

    clock.now += 2.0
    assert deliverer.run_once(client)
    row = delivery(db, deployment, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 3, 503)
    assert row.finished_at
    clock.now += 1000
    assert not deliverer.run_once(client)
    assert len(receiver.requests) == 3
    # Every retry is signed afresh: each attempt has its own timestamp, one delivery id.
    assert len({r.headers[HEADER_DELIVERY] for r in receiver.requests}) == 1


def test_a_delivery_cut_off_by_a_stop_is_pending_again_at_start(db, deployment):
    clock = Clock()
    deliverer, _ = make(db, Receiver(), clock)
    delivery_id = publish(db, deployment)
    claimed = deliverer.claim()  # the process dies before the answer comes
    assert claimed.delivery.status == "delivering"

    with db.write() as conn:
        assert queue.reset_in_flight(conn, clock.now) == 1
    row = delivery(db, deployment, delivery_id)
    assert (row.status, row.attempts) == ("pending", 0)


def test_the_deliverer_resumes_the_queue_after_a_restart(db, deployment):
    """Queued deliveries live in the store: a new deliverer (a restarted service) sends
    them, with its threads, as soon as it starts."""
    delivery_id = publish(db, deployment)
    receiver = Receiver(200)
    deliverer = Deliverer(db, SETTINGS, transport=httpx.MockTransport(receiver))
    deliverer.start()
    try:
        deadline = time.monotonic() + 10
        while delivery(db, deployment, delivery_id).status != "delivered":
            assert time.monotonic() < deadline, "not delivered"
            deliverer.kick()
            time.sleep(0.01)
    finally:
        deliverer.stop()
    assert [r.headers[HEADER_DELIVERY] for r in receiver.requests] == [delivery_id]


def test_a_deployment_without_a_webhook_url_queues_nothing(db):
    with db.write() as conn:
        deployment_id = repo.insert_deployment(conn, "default", "quiet", "", "", {})
    event = EventBus(db).publish(deployment_id, payloads.metrics())

    assert event.deployment == "quiet"
    with db.read() as conn:
        assert queue.list_for(conn, deployment_id) == []


def test_a_url_removed_after_queueing_fails_the_delivery_at_once(db, deployment):
    deliverer, client = make(db, Receiver(), Clock())
    delivery_id = publish(db, deployment)
    with db.write() as conn:
        repo.update_deployment(conn, deployment, "", "", {})

    assert deliverer.run_once(client)
    row = delivery(db, deployment, delivery_id)
    assert (row.status, row.last_error) == \
        ("failed", "the deployment has no governor_webhook_url any more")


def test_finished_deliveries_are_pruned_after_the_retention(db, deployment):
    deliverer, client = make(db, Receiver(200), Clock())
    publish(db, deployment)
    deliverer.run_once(client)
    pending_id = publish(db, deployment)

    with db.write() as conn:
        assert queue.prune(conn, time.time() - 3600) == 0
        assert queue.prune(conn, time.time() + 1) == 1
        assert [d.uuid for d in queue.list_for(conn, deployment)] == [pending_id]


def test_deleting_the_deployment_drops_its_deliveries_and_secret(db, deployment):
    publish(db, deployment)
    with db.write() as conn:
        secret_store.get_or_create(conn, deployment)
        repo.delete_deployment(conn, deployment)
    with db.read() as conn:
        assert queue.counts(conn) == {}
        assert secret_store.find(conn, deployment) is None


# --- the admin routes --------------------------------------------------------------------


@pytest.fixture
def app(database, fake_lxd):
    core = Core(db=database, lxd=fake_lxd,
                events=EventBus(database, max_attempts=2, secret_grace=60))
    with TestClient(ListenerApp(create_app(core), Listener.UNIX)) as client:
        client.post("/1.0/deployments", json={"name": "web", "governor_webhook_url": URL})
        yield client, core


DELIVERIES = "/1.0/deployments/web/webhook-deliveries"


def test_the_log_lists_deliveries_newest_first_and_shows_each_with_its_event(app):
    client, core = app
    first = core.events.publish(1, payloads.scale_request())
    second = core.events.publish(1, payloads.metrics())

    urls = client.get(DELIVERIES).json()["metadata"]
    listed = client.get(DELIVERIES, params={"recursion": 1}).json()["metadata"]
    failed_only = client.get(DELIVERIES, params={"status": "failed"}).json()["metadata"]
    metrics_only = client.get(DELIVERIES, params={"type": "metrics", "recursion": 1})
    shown = client.get(urls[1]).json()["metadata"]

    assert [d["event_id"] for d in listed] == [second.id, first.id]
    assert urls == [f"{DELIVERIES}/{d['id']}" for d in listed]
    assert all(d["status"] == "pending" and d["attempts"] == 0 and d["max_attempts"] == 2
               for d in listed)
    assert "event" not in listed[0]
    assert failed_only == []
    assert [d["event_id"] for d in metrics_only.json()["metadata"]] == [second.id]
    assert shown["event"] == first.to_api()
    assert client.get(f"{DELIVERIES}/nope").status_code == 404
    assert client.get(DELIVERIES, params={"status": "lost"}).json()["error"] == \
        'Unknown status "lost": use one of pending, delivering, delivered, failed'


def test_redelivery_queues_the_same_event_as_a_new_delivery(app):
    client, core = app
    event = core.events.publish(1, payloads.scale_request())
    (original,) = client.get(DELIVERIES, params={"recursion": 1}).json()["metadata"]

    answer = client.post(f"{DELIVERIES}/{original['id']}/redeliver")
    again = client.post(f"{DELIVERIES}/{answer.json()['metadata']['id']}/redeliver")

    assert answer.status_code == 201
    new = answer.json()["metadata"]
    assert answer.headers["Location"] == f"{DELIVERIES}/{new['id']}"
    assert (new["event_id"], new["status"], new["attempts"], new["redelivery_of"]) == \
        (event.id, "pending", 0, original["id"])
    # A redelivery of a redelivery still names the original.
    assert again.json()["metadata"]["redelivery_of"] == original["id"]
    shown = client.get(f"{DELIVERIES}/{new['id']}").json()["metadata"]
    assert shown["event"] == event.to_api()
    assert client.post(f"{DELIVERIES}/nope/redeliver").status_code == 404


def test_the_secret_is_made_on_first_use_and_rotates_with_a_grace_period(app, caplog):
    client, _ = app
    first = client.get("/1.0/deployments/web/webhook-secret").json()["metadata"]
    same = client.get("/1.0/deployments/web/webhook-secret").json()["metadata"]
    rotated = client.post("/1.0/deployments/web/webhook-secret").json()["metadata"]

    assert first == same and len(first["secret"]) == 64 and first["rotated_at"] == ""
    assert rotated["secret"] != first["secret"] and rotated["rotated_at"]
    assert rotated["previous_valid_until"]
    assert client.get("/1.0/deployments/nope/webhook-secret").status_code == 404
    # Neither the deployment object nor the logs show it.
    deployment = client.get("/1.0/deployments/web").json()["metadata"]
    assert first["secret"] not in json.dumps(deployment)
    assert first["secret"] not in caplog.text and rotated["secret"] not in caplog.text


def test_two_workers_claiming_at_once_never_take_the_same_delivery(db, deployment):
    """The second claim reads the row the first took but had not committed yet (READ
    COMMITTED on PostgreSQL; SQLite serialises writers): it takes the next one."""
    import threading

    first_id, second_id = publish(db, deployment), publish(db, deployment)
    now = time.time() + 1
    taken: list[str] = []
    with db.write() as conn:
        taken.append(queue.claim_due(conn, now).uuid)
        other = threading.Thread(target=lambda: taken.append(_claim(db, now)))
        other.start()
        other.join(0.5)  # it waits on the first's row (or write) lock meanwhile
    other.join(10)
    assert not other.is_alive()
    assert sorted(taken) == sorted([first_id, second_id])


def _claim(db, now: float) -> str:
    with db.write() as conn:
        claimed = queue.claim_due(conn, now)
        return claimed.uuid if claimed else ""

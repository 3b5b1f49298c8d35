"""Events across processes: two cores (two event buses, two tails) on one SQLite file
stand for two service processes sharing a store. An event published by A reaches B's
stream clients once, with B's filters and authorisation; revocation on A closes B's
streams (through the store's access counter, which each process follows); the log
and the outbox keep to their limits."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from types import SimpleNamespace

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from lxd_deployments.api import create_app
from lxd_deployments.core import Core
from lxd_deployments.core.event_bus import EventBus
from lxd_deployments.core.event_tail import LogCursor, OriginOrder
from lxd_deployments.core.generations import GenerationFollower
from lxd_deployments.store import event_log as log
from lxd_deployments.store.event_log import LogRow

from . import payloads
from .conftest import AsPeer, admin_app, give_key, trust_as

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

FAST = {"poll_interval": 0.02, "listeners_interval": 0.05}
DEADLINE = 10.0


def make_core(open_store, fake_lxd, **tail) -> Core:
    db = open_store()
    return Core(db=db, lxd=fake_lxd, events=EventBus(db, **{**FAST, **tail}))


@pytest.fixture
def shared(new_store):
    """`shared()`: a new Database on the test's one store, as another process opens it."""
    return new_store()


@pytest.fixture
def pair(shared, fake_lxd):
    """Processes A and B on one store, each tailing it, each with an admin client."""
    a = make_core(shared, fake_lxd)
    b = make_core(shared, fake_lxd)
    # As the daemon does: each process follows the others' trust and access changes.
    followers = [GenerationFollower(core.generations, core.tell_trust_listeners,
                                    core.tell_access_listeners, poll=0.05) for core in (a, b)]
    for core, follower in zip((a, b), followers, strict=True):
        core.events.start()
        follower.start()
    with TestClient(admin_app(a)) as api_a, TestClient(admin_app(b)) as api_b:
        for name in ("web", "other"):  # no webhook: events go through the outbox
            assert api_a.post("/1.0/deployments", json={"name": name}).status_code == 201
        assert api_a.post("/1.0/deployments/web/shapes", json={
            "name": "front", "scaling_minimum": 0, "scaling_maximum": 4,
            "instance_template": {"source": {"type": "image", "alias": "busybox"}},
        }).status_code == 201
        yield SimpleNamespace(a=a, b=b, api_a=api_a, api_b=api_b)
    for core, follower in zip((a, b), followers, strict=True):
        follower.stop()
        core.events.stop()
        core.operations.shutdown()


def receive(ws, timeout: float = DEADLINE) -> dict:
    """The next message, or fail after `timeout` seconds (TestClient's has no timeout)."""
    async def get():
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(get)
    ws._raise_on_close(message)
    return json.loads(message["text"])


def until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        time.sleep(0.01)


def listened_for(publisher: Core, deployment_id: int) -> None:
    """Wait until the publisher knows another process streams the deployment."""
    until(lambda: publisher.events.tail.others_watch(deployment_id),
          "the publisher sees the other process's stream client")


def test_an_event_published_by_one_process_reaches_the_others_clients_once(pair):
    with pair.api_b.websocket_connect("/1.0/events?deployment=web") as on_b, \
            pair.api_a.websocket_connect("/1.0/events?deployment=web") as on_a:
        listened_for(pair.a, 1)
        first = pair.a.events.publish(1, payloads.scale_request(count=1))
        second = pair.a.events.publish(1, payloads.metrics())
        assert [receive(on_b), receive(on_b)] == [first.to_api(), second.to_api()]
        assert [receive(on_a), receive(on_a)] == [first.to_api(), second.to_api()]
        # A's tail has read its own rows by now: it must not hand them to A's client.
        with pair.a.db.read() as conn:
            newest = log.last_id(conn)
        until(lambda: pair.a.events.tail.cursor.high >= newest, "A's tail passed its rows")
        third = pair.a.events.publish(1, payloads.scale_request(count=3))
        assert receive(on_a) == third.to_api()
        assert receive(on_b) == third.to_api()


def test_an_event_staged_with_its_webhook_delivery_is_logged_in_that_transaction(pair):
    pair.api_a.patch("/1.0/deployments/web",
                     json={"governor_webhook_url": "http://governor.example/hooks"})
    with pair.api_b.websocket_connect("/1.0/events?deployment=web") as on_b:
        listened_for(pair.a, 1)
        event = pair.a.events.publish(1, payloads.scale_request())
        assert receive(on_b) == event.to_api()
    with pair.a.db.read() as conn:
        (row,) = [r for r in log.read(conn, 0, [], 100) if r.kind == log.EVENT]
    assert row.body["id"] == event.id and row.origin == pair.a.events.process_id


def test_the_other_processes_clients_keep_their_filters(pair):
    with pair.api_b.websocket_connect("/1.0/events?type=metrics&all-projects=true") as b_metrics, \
            pair.api_b.websocket_connect("/1.0/events?deployment=other") as b_other:
        listened_for(pair.a, 1)
        listened_for(pair.a, 2)
        pair.a.events.publish(1, payloads.scale_request())  # neither wants it
        web_metrics = pair.a.events.publish(1, payloads.metrics())
        other_offer = pair.a.events.publish(2, payloads.capacity_offer())
        assert receive(b_metrics) == web_metrics.to_api()
        assert receive(b_other) == other_offer.to_api()


def test_nothing_is_logged_while_no_other_process_streams(pair):
    pair.a.events.publish(1, payloads.scale_request())
    with pair.api_a.websocket_connect("/1.0/events") as on_a:  # A's own client only
        event = pair.a.events.publish(1, payloads.metrics())
        assert receive(on_a) == event.to_api()
        pair.a.events.tail.run_once()
    with pair.a.db.read() as conn:
        assert log.count(conn) == 0
    assert pair.a.events.watched(1) is False


def test_a_governor_on_one_process_sees_only_its_deployment_of_the_others_events(
        pair, fake_lxd):
    governor = trust_as(pair.api_a, "gov-web")
    give_key(pair.api_a, "web", "autoscaler", governor, "rw")
    with TestClient(AsPeer(create_app(pair.b), governor.pem)) as as_governor, \
            as_governor.websocket_connect("/1.0/events?all-projects=true") as on_b:
        listened_for(pair.a, 1)
        assert not pair.a.events.tail.others_watch(2)  # its scope: web only
        pair.a.events.publish(2, payloads.metrics())
        mine = pair.a.events.publish(1, payloads.metrics())
        assert receive(on_b) == mine.to_api()


def test_revocation_on_one_process_closes_the_streams_of_another_at_once(pair):
    governor = trust_as(pair.api_a, "gov-web")
    give_key(pair.api_a, "web", "autoscaler", governor, "rw")
    with TestClient(AsPeer(create_app(pair.b), governor.pem)) as as_governor, \
            as_governor.websocket_connect("/1.0/events?deployment=web") as on_b:
        listened_for(pair.a, 1)
        started = time.monotonic()
        assert pair.api_a.delete("/1.0/deployments/web/keys/autoscaler").status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            receive(on_b)
        took = time.monotonic() - started
    assert (closed.value.code, closed.value.reason) == (1008, "access revoked")
    assert took < 5.0  # not the minute of the periodic recheck


def test_a_launch_on_one_process_shows_its_operation_and_lifecycle_on_another(pair):
    with pair.api_b.websocket_connect("/1.0/events") as on_b:
        listened_for(pair.a, 1)
        response = pair.api_a.post("/1.0/deployments/web/shapes/front/instances",
                                   json={"instance_name": "c1"})
        assert response.status_code == 202, response.json()
        op_id = response.json()["metadata"]["id"]
        seen = []
        while not any(m["type"] == "lifecycle" and m["metadata"]["action"] ==
                      "instance-started" for m in seen):
            seen.append(receive(on_b))
            assert len(seen) < 50, seen
        while not any(m["type"] == "operation" and m["metadata"]["status"] == "Success"
                      for m in seen):
            seen.append(receive(on_b))
            assert len(seen) < 50, seen
    launched = [m for m in seen if m["type"] == "instance-launched"]
    assert [m["metadata"]["instance"] for m in launched] == ["c1"]
    assert all(m["metadata"]["id"] == op_id for m in seen if m["type"] == "operation")


def test_the_other_processes_events_count_against_a_clients_buffer(shared):
    """Rows from the log go through the same hand-over as local events: a client that
    lets more than `stream_buffer` pile up is cut off."""
    bus = EventBus(shared(), stream_buffer=16)
    body = payloads.metrics()

    async def scenario():
        subscription = bus.subscribe(asyncio.get_running_loop(), lambda e: True)
        bus._from_log([LogRow(n, "other", n, log.EVENT, {
            "id": str(n), "type": body.TYPE, "timestamp": "", "project": "default",
            "deployment": "web", "deployment_id": 1, "metadata": body.metadata()})
            for n in range(1, 21)])
        await asyncio.sleep(0)  # let the loop run the hand-overs
        return subscription

    subscription = asyncio.run(scenario())
    assert subscription.overflowed and subscription.queue.qsize() == 17  # 16 and the cut


# --- the cursor and the limits ------------------------------------------------------------


def rows(*ids: int) -> list[LogRow]:
    return [LogRow(i, "p", i, log.EVENT, {}) for i in ids]


def test_a_row_committed_late_below_the_highest_id_is_delivered_once():
    cursor = LogCursor(0, grace=30.0)
    assert [r.id for r in cursor.take(rows(1, 3), now=0.0)] == [1, 3]
    assert sorted(cursor.missing) == [2]
    assert [r.id for r in cursor.take(rows(2, 3), now=1.0)] == [2]  # 3: seen
    assert cursor.missing == {} and cursor.high == 3
    assert cursor.take(rows(2, 3), now=2.0) == []


def test_a_hole_is_given_up_after_the_grace_and_holes_are_bounded():
    cursor = LogCursor(0, grace=5.0, max_missing=3)
    cursor.take(rows(2), now=0.0)
    assert sorted(cursor.missing) == [1]
    cursor.take([], now=6.0)
    assert cursor.missing == {}  # a rolled-back insert never fills its hole
    cursor.take(rows(100), now=7.0)
    assert sorted(cursor.missing) == [97, 98, 99]


def test_the_tail_asks_again_for_the_ids_it_jumped_over(shared, fake_lxd):
    """As on PostgreSQL: id 2 becomes visible after id 3 was read."""
    core = make_core(shared, fake_lxd)
    got: list[int] = []
    core.events.tail._deliver = lambda fresh: got.extend(r.id for r in fresh)
    core.events.tail.run_once()  # the cursor starts at the end
    with core.db.write() as conn:
        log.append(conn, "other", [(1, log.EVENT, {"n": 1})], time.time())
        conn.exec_driver_sql("INSERT INTO event_log (id, origin, seq, kind, body, created_at)"
                             " VALUES (3, 'another', 1, 'event', '{}', 0)")
    core.events.tail.run_once()
    with core.db.write() as conn:
        conn.exec_driver_sql("INSERT INTO event_log (id, origin, seq, kind, body, created_at)"
                             " VALUES (2, 'other', 2, 'event', '{}', 0)")
    core.events.tail.run_once()
    core.events.tail.run_once()
    assert got == [1, 3, 2]
    core.operations.shutdown()


def ordered(origin: str, *pairs: tuple[int, int]) -> list[LogRow]:
    """Rows of one origin as (id, seq)."""
    return [LogRow(i, origin, seq, log.EVENT, {}) for i, seq in pairs]


def test_each_origins_rows_go_in_its_own_order_whatever_the_commit_order():
    order = OriginOrder(grace=2.0)
    order.start({"b": 6}, now=0.0)  # b was at 6 when this reader started
    assert [r.seq for r in order.push(ordered("a", (1, 1)), now=0.0)] == [1]
    assert order.push(ordered("a", (2, 3)), now=0.1) == []  # seq 2 not there yet
    assert [r.seq for r in order.push(ordered("b", (3, 7)), now=0.2)] == [7]  # b apart
    assert [r.seq for r in order.push(ordered("a", (4, 2)), now=0.3)] == [2, 3]
    assert order.held() == 0


def test_a_place_that_never_fills_is_given_up_after_the_grace_and_held_rows_are_bounded():
    order = OriginOrder(grace=2.0, max_held=3)
    order.push(ordered("a", (1, 1)), now=0.0)
    assert order.push(ordered("a", (3, 3), (4, 4)), now=1.0) == []
    assert order.release(now=2.5) == []
    assert [r.seq for r in order.release(now=3.1)] == [3, 4]  # seq 2 rolled back
    assert [r.seq for r in order.push(ordered("a", (2, 2)), now=3.2)] == [2]  # late, once
    order.push(ordered("a", (9, 9), (10, 10), (11, 11)), now=4.0)
    assert [r.seq for r in order.push(ordered("a", (12, 12)), now=4.1)] == [9, 10, 11, 12]


def test_an_outbox_row_committed_after_a_later_event_still_goes_first(shared, fake_lxd):
    """A logs X through its outbox, then Y (with a webhook delivery) in Y's own
    transaction, which commits first: B's client still gets X then Y."""
    a = make_core(shared, fake_lxd)  # A's tail is run by hand
    b = make_core(shared, fake_lxd)
    b.events.start()
    try:
        with TestClient(admin_app(a)) as api_a, TestClient(admin_app(b)) as api_b:
            api_a.post("/1.0/deployments", json={"name": "quiet"})
            api_a.post("/1.0/deployments", json={
                "name": "hooked", "governor_webhook_url": "http://governor.example/h"})
            with api_b.websocket_connect("/1.0/events") as on_b:
                until(lambda: a.events.tail.run_once() is not None
                      and a.events.tail.others_watch(1), "A sees B's client")
                x = a.events.publish(1, payloads.metrics())  # in A's outbox
                y = a.events.publish(2, payloads.scale_request())  # logged, committed
                with a.db.read() as conn:
                    assert [r.body["id"] for r in log.read(conn, 0, [], 10)] == [y.id]
                until(lambda: b.events.tail.order.held() == 1, "B holds Y for X")
                a.events.tail.run_once()  # X is written now
                assert [receive(on_b)["id"], receive(on_b)["id"]] == [x.id, y.id]
    finally:
        b.events.stop()
        for core in (a, b):
            core.operations.shutdown()


def test_the_log_is_pruned_by_age_and_by_row_count(shared):
    db = shared()
    with db.write() as conn:
        log.append(conn, "p", [(n, log.EVENT, {"n": n}) for n in range(5)], now=100.0)
        log.append(conn, "p", [(n, log.EVENT, {"n": n}) for n in range(30)], now=200.0)
        log.append(conn, "gone", [(7, log.EVENT, {"n": -1})], now=100.0)
        assert log.prune(conn, before=150.0, max_rows=1000, keep_last_until=50.0) == 5
        # The newest 10 ids: p's last 9 and gone's (older than `before`, but its last).
        assert log.prune(conn, before=150.0, max_rows=10, keep_last_until=50.0) == 21
        kept = log.read(conn, 0, [], 100)
        assert [r.body["n"] for r in kept] == [*range(21, 30), -1]
        assert log.positions(conn, kept[-1].id) == {"gone": 7, "p": 29}
        assert log.prune(conn, before=150.0, max_rows=10, keep_last_until=120.0) == 1


def test_the_outbox_drops_its_oldest_rows_past_its_limit(shared):
    db = shared()
    bus = EventBus(db, outbox_limit=3)
    for n in range(5):
        bus.tail.post(log.EVENT, {"n": n})
    bus.tail.run_once()
    with db.read() as conn:
        assert [r.body["n"] for r in log.read(conn, 0, [], 100)] == [2, 3, 4]
    assert bus.tail.dropped == 2


def test_a_process_gone_quiet_is_no_listener_after_three_heartbeats(shared):
    db = shared()
    now = [1000.0]
    a = EventBus(db, heartbeat=10.0, clock=lambda: now[0])
    with db.write() as conn:
        log.set_listening(conn, "gone", None, now=1000.0)
    a.tail.run_once()
    assert a.tail.others_listen() and a.tail.others_watch(7)
    now[0] += 31.0
    a.tail.run_once()
    assert not a.tail.others_listen()


# --- on PostgreSQL only: commits out of id order, NOTIFY ----------------------------------


@pytest.fixture
def on_postgresql(postgres):
    """`open()`: a new Database on one fresh PostgreSQL database."""
    made = postgres.create_database()
    opened = []

    def open_():
        opened.append(made.open())
        return opened[-1]

    yield open_
    for db in opened:
        db.close()
    postgres.drop_database(made.name)


def test_on_postgresql_a_row_committed_after_a_later_id_is_still_delivered(on_postgresql):
    reader = EventBus(on_postgresql())
    got: list[str] = []
    reader.tail._deliver = lambda fresh: got.extend(r.origin for r in fresh)
    reader.tail.run_once()  # the cursor starts at the end
    writer = on_postgresql()
    inserted, release = threading.Event(), threading.Event()

    def slow() -> None:  # takes its id first, commits last
        with writer.write() as conn:
            log.append(conn, "slow", [(1, log.EVENT, {})], time.time())
            inserted.set()
            assert release.wait(DEADLINE)

    thread = threading.Thread(target=slow)
    thread.start()
    assert inserted.wait(DEADLINE)
    with writer.write() as conn:
        log.append(conn, "quick", [(1, log.EVENT, {})], time.time())
    reader.tail.run_once()
    assert got == ["quick"] and len(reader.tail.cursor.missing) == 1
    release.set()
    thread.join(DEADLINE)
    reader.tail.run_once()
    reader.tail.run_once()
    assert got == ["quick", "slow"] and reader.tail.cursor.missing == {}


def test_on_postgresql_an_append_wakes_the_other_tails_at_once(on_postgresql):
    """With a 5 s poll, only the NOTIFY of the append can bring the event within 1 s."""
    slow_poll = {"poll_interval": 5.0, "listeners_interval": 0.0}
    a, b = EventBus(on_postgresql(), **slow_poll), EventBus(on_postgresql(), **slow_poll)
    with a.db.write() as conn:
        conn.exec_driver_sql("INSERT INTO deployments (project, name, description, "
                             "governor_webhook_url, created_at) VALUES "
                             "('default', 'web', '', '', '')")
    b.start()
    latencies = []

    async def scenario():
        subscription = b.subscribe(asyncio.get_running_loop(), lambda e: True)
        until(lambda: a.tail.run_once() is not None and a.tail.others_watch(1),
              "A sees B's client")
        for _ in range(20):
            started = time.monotonic()
            event = a.publish(1, payloads.metrics())
            a.tail.run_once()  # A's writer (its thread is not running here)
            got = await asyncio.wait_for(subscription.queue.get(), 1.0)
            latencies.append(time.monotonic() - started)
            assert got.id == event.id

    try:
        asyncio.run(scenario())
    finally:
        b.stop()
    print(f"\nPostgreSQL, NOTIFY: append -> other process's subscriber: median "
          f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 1.0

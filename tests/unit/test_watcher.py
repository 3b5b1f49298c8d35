"""Outside changes through LXD's lifecycle events (FakeLXD emits them as LXD would), the
watcher's threads, the events stream's parsing and reconnects, and own-change filtering."""

from __future__ import annotations

import threading
import time

import pytest

from lxd_deployments.core.state_actions import StateActions
from lxd_deployments.core.watcher import Watcher, handle_event
from lxd_deployments.lxd import LifecycleEvent
from lxd_deployments.lxd import events as lxd_events
from lxd_deployments.store import instances as records

from .test_reconcile import (
    BASE,
    changes,
    launch,
    make_shape,
    names,
    our_keys,
    put_record,
    scaling_current,
    statuses,
)


def event(action: str, name: str, project: str = "default", **context) -> LifecycleEvent:
    return LifecycleEvent(project=project, action=action, name=name, context=context)


def wait_op(api, response) -> dict:
    assert response.status_code == 202, response.json()
    waited = api.get(response.json()["operation"] + "/wait", params={"timeout": 10})
    return waited.json()["metadata"]


@pytest.fixture
def shape(api):
    make_shape(api)


@pytest.fixture
def watcher(core, fake_lxd):
    """A running watcher over the fake LXD; `settle()` waits for queued events."""
    while not fake_lxd.events.empty():  # events of the fixtures' own work before it ran
        fake_lxd.events.get_nowait()
        fake_lxd.events.task_done()
    w = Watcher(core, interval=3600)
    w.start()

    def settle() -> None:
        fake_lxd.drain()
        w.settle()

    w.settle_all = settle
    yield w
    w.stop()


# --- handle_event, one event at a time --------------------------------------------------------

def test_deleted_event_drops_the_record(api, core, fake_lxd, shape):
    launch(api, "c1")
    launch(api, "c2")
    fake_lxd.instances.pop(("default", "c1"))
    assert handle_event(core, event("instance-deleted", "c1"))
    assert names(api) == ["c2"]
    assert scaling_current(api) == 1
    assert changes(api) == [("deleted", "c1", {"event": "instance-deleted",
                                               "previous": "ready"})]
    assert not handle_event(core, event("instance-deleted", "c1"))  # already gone


def test_deleted_event_for_our_own_work_or_unknown_names_is_ignored(api, core, fake_lxd, shape):
    put_record(core, "pending", records.PENDING)
    put_record(core, "deleting", records.DELETING)
    for name in ("pending", "deleting", "unknown"):
        assert not handle_event(core, event("instance-deleted", name))
    assert statuses(core) == {"pending": "pending", "deleting": "deleting"}
    assert changes(api) == []


def test_late_deleted_event_does_not_drop_an_instance_that_exists_again(api, core, fake_lxd,
                                                                        shape):
    launch(api, "c1")
    assert not handle_event(core, event("instance-deleted", "c1"))
    assert names(api) == ["c1"]


def test_deleted_event_for_a_record_whose_name_holds_an_outside_instance(api, core, fake_lxd,
                                                                         shape):
    launch(api, "c1")
    fake_lxd.instances.pop(("default", "c1"))
    outside = fake_lxd.add_instance("default", "c1", {})
    assert handle_event(core, event("instance-deleted", "c1"))
    assert names(api) == []
    assert fake_lxd.instances[("default", "c1")] is outside


def test_renamed_event_moves_the_record(api, core, fake_lxd, shape):
    launch(api, "c1")
    fake_lxd.rename_instance("default", "c1", "c9")
    assert handle_event(core, event("instance-renamed", "c9", old_name="c1"))
    assert names(api) == ["c9"]
    assert changes(api) == [("renamed", "c9", {"old_name": "c1", "new_name": "c9"})]
    assert api.get(f"{BASE}/instances/c9").status_code == 200


def test_renamed_event_onto_a_stale_record_drops_the_stale_one(api, core, fake_lxd, shape):
    launch(api, "c1")
    launch(api, "c2")
    fake_lxd.instances.pop(("default", "c2"))  # c2 deleted, event missed
    fake_lxd.rename_instance("default", "c1", "c2")
    assert handle_event(core, event("instance-renamed", "c2", old_name="c1"))
    assert names(api) == ["c2"]
    assert [c[:2] for c in changes(api)] == [("deleted", "c2"), ("renamed", "c2")]


def test_renamed_event_of_an_outside_instance_is_not_followed(api, core, fake_lxd, shape):
    launch(api, "c1")
    fake_lxd.instances.pop(("default", "c1"))
    fake_lxd.add_instance("default", "c1", {})  # someone else's c1, then renamed
    fake_lxd.rename_instance("default", "c1", "theirs")
    assert handle_event(core, event("instance-renamed", "theirs", old_name="c1"))
    assert names(api) == []
    assert changes(api)[0][:2] == ("deleted", "c1")
    assert fake_lxd.instances[("default", "theirs")]["config"] == {}


def test_state_events_are_recorded(api, core, fake_lxd, shape):
    launch(api, "c1")
    assert not handle_event(core, event("instance-started", "c1"))  # our launch's own start
    for action, change in (("instance-shutdown", "stopped"), ("instance-started", "started"),
                           ("instance-stopped", "stopped"), ("instance-restarted", "restarted"),
                           ("instance-paused", "frozen"), ("instance-resumed", "unfrozen")):
        assert handle_event(core, event(action, "c1"))
        assert changes(api)[-1] == (change, "c1", {"event": action})
    assert names(api) == ["c1"]
    assert not handle_event(core, event("instance-started", "unknown"))
    assert not handle_event(core, event("instance-created", "c1"))


def test_started_event_makes_a_failed_record_ready(api, core, fake_lxd, shape):
    fake_lxd.fail_start.add("c1")
    wait_op(api, api.post(f"{BASE}/instances", json={"instance_name": "c1"}))
    assert statuses(core) == {"c1": "failed"}
    fake_lxd.instances[("default", "c1")]["status"] = "Running"  # `lxc start c1`
    assert handle_event(core, event("instance-started", "c1"))
    assert statuses(core) == {"c1": "ready"}


def test_events_of_projects_not_allowed_are_ignored(api, core, fake_lxd, shape):
    import dataclasses
    launch(api, "c1")
    fake_lxd.instances.pop(("default", "c1"))
    limited = dataclasses.replace(core, projects=frozenset({"other"}))
    assert not handle_event(limited, event("instance-deleted", "c1"))
    assert names(api) == ["c1"]


def test_own_state_actions_explain_their_events_for_a_grace_period(core):
    now = [100.0]
    actions = StateActions(core.db, grace=5, clock=lambda: now[0])
    with actions.running("p", "c1", "stop"):
        assert actions.busy("p", "c1")
        assert not actions.explains("p", "c1", "instance-started")
        assert not actions.explains("p", "c2", "instance-stopped")
    assert not actions.busy("p", "c1")
    now[0] += 4.9
    assert actions.explains("p", "c1", "instance-shutdown")  # the event may come late
    assert not actions.explains("p", "c1", "instance-stopped")  # used up: outside again

    with actions.running("p", "c1", "start"):
        pass
    now[0] += 5.1
    assert not actions.explains("p", "c1", "instance-started")  # expired


def test_a_restart_explains_a_stop_on_its_way_and_ends_with_its_final_event(core):
    actions = StateActions(core.db)
    with actions.running("p", "c1", "restart"):
        pass
    assert actions.explains("p", "c1", "instance-stopped")
    assert actions.explains("p", "c1", "instance-started")
    assert not actions.explains("p", "c1", "instance-started")
    with actions.running("p", "c1", "restart"):
        pass
    assert actions.explains("p", "c1", "instance-restarted")
    assert not actions.explains("p", "c1", "instance-stopped")


# --- the watcher's threads over the fake LXD's event stream ------------------------------------

def test_outside_delete_rename_and_stop_are_followed(api, core, fake_lxd, shape, watcher):
    for name in ("c1", "c2", "c3"):
        launch(api, name)
    fake_lxd.delete_instance("default", "c1")  # `lxc delete --force c1`
    fake_lxd.rename_instance("default", "c2", "c2b")  # `lxc rename c2 c2b`
    fake_lxd.change_state("default", "c3", "stop")  # `lxc stop c3`
    watcher.settle_all()
    assert names(api) == ["c2b", "c3"]
    assert scaling_current(api) == 2
    # A forced delete of a running instance stops it first, as LXD reports it.
    assert [c[:2] for c in changes(api)] == [("stopped", "c1"), ("deleted", "c1"),
                                             ("renamed", "c2b"), ("stopped", "c3")]


def test_the_services_own_changes_are_not_recorded(api, core, fake_lxd, shape, watcher):
    launch(api, "c1")
    launch(api, "c2")
    for action in ("stop", "start", "restart", "freeze", "unfreeze"):
        operation = wait_op(api, api.put(f"{BASE}/instances/c1/state",
                                         json={"action": action}))
        assert operation["status"] == "Success", operation
    assert wait_op(api, api.delete(f"{BASE}/instances/c2"))["status"] == "Success"
    watcher.settle_all()
    assert changes(api) == []
    assert names(api) == ["c1"]


def test_force_deletes_are_not_recorded_as_outside_changes(api, core, fake_lxd, watcher):
    make_shape(api, shape="a")
    make_shape(api, shape="b")
    launch(api, "a1", base="/1.0/deployments/web/shapes/a")
    launch(api, "b1", base="/1.0/deployments/web/shapes/b")
    assert api.delete("/1.0/deployments/web/shapes/a", params={"force": 1}).status_code == 200
    watcher.settle_all()
    assert changes(api) == []
    assert names(api, "/1.0/deployments/web/shapes/b") == ["b1"]


def test_outside_stop_right_after_our_start_is_recorded(api, core, fake_lxd, shape, watcher):
    launch(api, "c1")
    fake_lxd.change_state("default", "c1", "stop", force=True)
    watcher.settle_all()
    assert changes(api) == [("stopped", "c1", {"event": "instance-stopped"})]


def test_connecting_triggers_a_full_reconcile(api, core, fake_lxd, shape):
    launch(api, "c1")
    fake_lxd.instances.pop(("default", "c1"))  # missed: nobody listened
    w = Watcher(core, interval=3600)
    w.start()
    try:
        deadline = time.monotonic() + 5
        while names(api) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        w.stop()
    assert fake_lxd.connections == 1
    assert names(api) == []
    assert changes(api)[0][:2] == ("deleted", "c1")


def test_periodic_reconcile_catches_what_events_missed(api, core, fake_lxd, shape):
    w = Watcher(core, interval=0.05)
    w.start()
    try:
        time.sleep(0.1)
        fake_lxd.add_instance("default", "found", our_keys(core))  # no event
        deadline = time.monotonic() + 5
        while not names(api) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        w.stop()
    assert names(api) == ["found"]


def test_watcher_stops_promptly(core):
    w = Watcher(core, interval=3600)
    w.start()
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 2
    assert all(not t.is_alive() for t in threading.enumerate()
               if t.name in ("lxd-events", "lxd-events-handler", "reconciler"))


def test_a_failing_handler_does_not_stop_the_watcher(api, core, fake_lxd, shape, watcher,
                                                      monkeypatch):
    launch(api, "c1")
    launch(api, "c2")
    calls = []

    listing = fake_lxd.list_instances

    def broken(project, **kwargs):
        # The delete handler's look at LXD: it fails for the first event (c1's) only.
        calls.append(project)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return listing(project, **kwargs)

    monkeypatch.setattr(fake_lxd, "list_instances", broken)
    fake_lxd.instances.pop(("default", "c1"))
    fake_lxd.emit("default", "instance-deleted", "c1")
    fake_lxd.instances.pop(("default", "c2"))
    fake_lxd.emit("default", "instance-deleted", "c2")
    watcher.settle_all()
    assert len(calls) >= 2  # c2's event was handled after c1's failed
    assert "c2" not in names(api)


# --- the events stream: parsing and reconnects -------------------------------------------------

def lxd_message(action: str, source: str, project: str | None = None, context=None) -> dict:
    """A lifecycle message as Debian's LXD 5.0.2 sends it."""
    message = {"type": "lifecycle", "timestamp": "2024-01-01T00:00:00Z", "location": "none",
               "metadata": {"action": action, "source": source, "context": context,
                            "requestor": {"username": "root", "protocol": "unix"}}}
    if project is not None:
        message["project"] = project
    return message


def test_parse_event_of_lxd_messages():
    parse = lxd_events.parse_event
    assert parse(lxd_message("instance-deleted", "/1.0/instances/c1", "default")) == \
        event("instance-deleted", "c1")
    assert parse(lxd_message("instance-renamed", "/1.0/instances/x2?project=p1", "p1",
                             {"old_name": "x1"})) == \
        event("instance-renamed", "x2", project="p1", old_name="x1")
    # The project of the source wins; without either, it is the default project.
    assert parse(lxd_message("instance-stopped", "/1.0/instances/c1?project=p2")).project == "p2"
    assert parse(lxd_message("instance-stopped", "/1.0/instances/c1")).project == "default"
    assert parse(lxd_message("instance-snapshot-created",
                             "/1.0/instances/c1/snapshots/s1", "default")) is None
    assert parse(lxd_message("image-created", "/1.0/images/abc", "default")) is None
    assert parse({"type": "logging", "metadata": {"message": "hi"}}) is None


def test_event_resources():
    assert lxd_events.event_resources(None) == ["/1.0/events?type=lifecycle&all-projects=true"]
    assert lxd_events.event_resources({"b", "a"}) == [
        "/1.0/events?type=lifecycle&project=a", "/1.0/events?type=lifecycle&project=b"]


class FakeSocket:
    """Stands for a ws4py client: scripted connect/run outcomes."""

    def __init__(self, script: list[str], log: list[str]) -> None:
        self.outcome = script.pop(0) if script else "block"
        self.log = log
        self.interrupted = threading.Event()
        self.resource = None
        self.handler = None

    def connect(self) -> None:
        self.log.append(f"connect {self.resource}")
        if self.outcome == "refuse":
            raise OSError("connection refused")

    def run(self) -> None:
        if self.outcome == "event":
            self.handler(event("instance-deleted", "c1"))
            return
        if self.outcome == "drop":
            return
        self.interrupted.wait()

    def interrupt(self) -> None:
        self.interrupted.set()

    def close_connection(self) -> None:
        pass


def test_watch_reconnects_with_backoff_and_reports_each_connection():
    log: list[str] = []
    script = ["refuse", "refuse", "event", "drop", "block"]
    sockets: list[FakeSocket] = []
    received: list[LifecycleEvent] = []
    connected = threading.Event()
    connections = []

    def open_socket():
        sockets.append(FakeSocket(script, log))
        return sockets[-1]

    def on_connect():
        connections.append(time.monotonic())
        if len(connections) == 3:
            connected.set()

    stop = threading.Event()
    thread = threading.Thread(target=lxd_events.watch, args=(open_socket, received.append, stop),
                              kwargs={"on_connect": on_connect, "min_backoff": 0.01,
                                      "max_backoff": 0.02})
    thread.start()
    assert connected.wait(5)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert len(log) == 5
    assert set(log) == {"connect /1.0/events?type=lifecycle&all-projects=true"}
    assert len(connections) == 3  # after each successful connect: reconcile then
    assert received == [event("instance-deleted", "c1")]
    assert sockets[-1].interrupted.is_set()


def test_watch_opens_one_stream_per_allowed_project():
    log: list[str] = []
    stop = threading.Event()

    def open_socket():
        return FakeSocket([], log)

    thread = threading.Thread(target=lxd_events.watch, args=(open_socket, print, stop),
                              kwargs={"projects": {"p1", "p2"}})
    thread.start()
    deadline = time.monotonic() + 5
    while len(log) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert sorted(log) == ["connect /1.0/events?type=lifecycle&project=p1",
                           "connect /1.0/events?type=lifecycle&project=p2"]


# --- the daemon wires it in --------------------------------------------------------------------

def test_daemon_recovers_before_work_on_instances_and_stops_the_watcher(tmp_path, fake_lxd,
                                                                        monkeypatch):
    import asyncio

    import uvicorn

    from lxd_deployments import daemon
    from lxd_deployments.config import Settings
    from lxd_deployments.core import Core
    from lxd_deployments.store import open_database

    settings = Settings(state_dir=tmp_path / "state", unix_socket=tmp_path / "svc.socket",
                        reconcile_interval=3600)
    settings.state_dir.mkdir()
    service = daemon.service_id(settings)
    # What a SIGKILL left: a reservation whose instance exists, one whose never appeared.
    db = open_database(settings.database_path)
    seed = Core(db=db, lxd=fake_lxd, service_id=service)
    from fastapi.testclient import TestClient

    from .conftest import admin_app
    with TestClient(admin_app(seed)) as api:
        make_shape(api)
    put_record(seed, "made", records.PENDING)
    fake_lxd.add_instance("default", "made", our_keys(seed))
    put_record(seed, "never", records.PENDING)
    db.close()

    monkeypatch.setattr(daemon, "PylxdAdapter", lambda: fake_lxd)
    monkeypatch.setattr(daemon, "attach_lxd", lambda core, settings: None)
    seen = {}

    async def fake_serve(self, sockets=None):
        if self.config.app.listener != "unix":
            return  # the in-instance server (on its own thread) has nothing to show
        core = self.config.app.state.core
        # Serving starts at once; work on instances waits for the startup reconcile.
        deadline = time.monotonic() + 5
        while not core.lxd_readiness.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen["statuses"] = statuses(core)
        seen["threads"] = {t.name for t in threading.enumerate()}
        fake_lxd.delete_instance("default", "made")  # `lxc delete` while serving
        deadline = time.monotonic() + 5
        while statuses(core) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen["after_delete"] = statuses(core)

    monkeypatch.setattr(uvicorn.Server, "serve", fake_serve)
    asyncio.run(daemon.serve(settings))
    assert seen["statuses"] == {"made": "ready"}
    assert {"lxd-events", "lxd-events-handler", "reconciler"} <= seen["threads"]
    assert seen["after_delete"] == {}
    assert not settings.socket_path.exists()
    assert not any(t.name in ("lxd-events", "lxd-events-handler", "reconciler")
                   for t in threading.enumerate())

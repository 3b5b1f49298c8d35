"""Pets: the schedule parser (DST, windows over midnight, the week's wrap), the states and
their changes, the resource's API, placement over a fake cluster with a pet, and the duty
(notice, reclaim with replacements, the pet winning, a restart resuming), all driven by a
manual clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from lxd_deployments.config import EventSettings
from lxd_deployments.core import Core
from lxd_deployments.core.clock import FileClock, ManualClock, iso
from lxd_deployments.core.event_bus import EventBus
from lxd_deployments.core.monitor import Monitor
from lxd_deployments.core.pet_duty import PetDuty
from lxd_deployments.core.pets import state_at
from lxd_deployments.core.scale_requests import Debounce
from lxd_deployments.core.schedule import parse
from lxd_deployments.errors import InvalidInput
from lxd_deployments.lxd import ClusterMember
from lxd_deployments.store import open_database
from lxd_deployments.store.rows import PetRow

from .conftest import admin_app, error_of

SHAPES = "/1.0/deployments/web/shapes"
TEMPLATE = {"source": {"type": "image", "alias": "busybox"}}
THREE = ["m1", "m2", "m3"]
# A Wednesday, in winter (London on GMT).
WED = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the schedule -----------------------------------------------------------------------


def test_a_weekday_window_in_london_follows_summer_time():
    s = parse("Mon-Fri 08:00-18:00 Europe/London")
    assert s.current_or_next(utc(2026, 12, 2, 12)) == (utc(2026, 12, 2, 8), utc(2026, 12, 2, 18))
    # July: BST, 08:00 local is 07:00 UTC; Saturday noon: the next one is Monday's.
    assert s.current_or_next(utc(2026, 7, 4, 12)) == (utc(2026, 7, 6, 7), utc(2026, 7, 6, 17))


def test_the_day_clocks_change_the_window_moves_by_the_hour():
    s = parse("daily 01:30-03:00 Europe/London")
    # 29 March 2026: 01:00 GMT -> 02:00 BST; 01:30 does not exist: the offset before.
    assert s.current_or_next(utc(2026, 3, 29, 0)) == (utc(2026, 3, 29, 1, 30),
                                                      utc(2026, 3, 29, 2))
    # 25 October 2026: 02:00 BST -> 01:00 GMT; 01:30 happens twice: the first (BST).
    assert s.current_or_next(utc(2026, 10, 25, 0)) == (utc(2026, 10, 25, 0, 30),
                                                       utc(2026, 10, 25, 3))


def test_a_window_over_midnight_and_over_the_week_end():
    s = parse("Sun 22:00-02:00")
    assert s.current_or_next(utc(2026, 12, 7, 1)) == (utc(2026, 12, 6, 22), utc(2026, 12, 7, 2))
    assert s.current_or_next(utc(2026, 12, 7, 3)) == (utc(2026, 12, 13, 22),
                                                      utc(2026, 12, 14, 2))
    wrap = parse("Fri-Mon 00:00-24:00 UTC")  # one interval from Friday to Tuesday
    assert wrap.current_or_next(WED) == (utc(2026, 12, 4), utc(2026, 12, 8))
    assert wrap.current_or_next(utc(2026, 12, 6, 5)) == (utc(2026, 12, 4), utc(2026, 12, 8))


def test_several_windows_and_lists_of_days():
    s = parse("Sat,Sun 10:00-12:00; Wed 11:00-13:00 UTC")
    assert s.current_or_next(WED) == (utc(2026, 12, 2, 11), utc(2026, 12, 2, 13))
    assert s.current_or_next(utc(2026, 12, 2, 14)) == (utc(2026, 12, 5, 10),
                                                       utc(2026, 12, 5, 12))


@pytest.mark.parametrize("text,message", [
    ("", "schedule is empty"),
    ("Mon-Fri 08:00-18:00 Mars/Olympus", 'Unknown timezone "Mars/Olympus"'),
    ("Mon-Fri 8-18", 'Bad window "Mon-Fri 8-18"'),
    ("Funday 08:00-09:00", 'Bad day "Funday"'),
    ("Mon 25:00-26:00", 'Bad time "25:00"'),
    ("Mon 08:00-09:00; " * 40, "more than 32 windows"),
    ("x" * 2000, "longer than 1024"),
])
def test_a_bad_schedule_is_refused_saying_what_is_wrong(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse(text)


# --- states -----------------------------------------------------------------------------


def pet_row(schedule: str = "Wed 14:00-16:00 UTC", lead_time: int = 3600) -> PetRow:
    return PetRow(id=1, name="p", description="", member="m3", cluster_group="",
                  schedule=schedule, lead_time=lead_time, grace_period=5, allow_vms=False)


def test_idle_then_notice_then_busy_then_idle_with_the_next_change():
    pet = pet_row()
    states = [(state_at(pet, t).state, iso(state_at(pet, t).next_change))
              for t in (utc(2026, 12, 2, 12), utc(2026, 12, 2, 13), utc(2026, 12, 2, 14),
                        utc(2026, 12, 2, 15, 59), utc(2026, 12, 2, 16))]
    assert states == [("idle", "2026-12-02T13:00:00Z"), ("notice", "2026-12-02T14:00:00Z"),
                      ("busy", "2026-12-02T16:00:00Z"), ("busy", "2026-12-02T16:00:00Z"),
                      ("idle", "2026-12-09T13:00:00Z")]


def test_file_clock_reads_the_time_the_test_wrote_and_falls_back_to_real_time(tmp_path):
    path = tmp_path / "now"
    path.write_text("2026-12-02T12:00:00Z\n")
    assert FileClock(path).now() == WED
    path.write_text("x" * 300)
    assert abs(FileClock(path).now() - datetime.now(UTC)) < timedelta(minutes=1)


# --- API and placement ------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(WED)


@pytest.fixture
def pcore(tmp_path, fake_lxd, clock) -> Core:
    fake_lxd.cluster = [ClusterMember(m) for m in THREE]
    db = open_database(tmp_path / "pets.sqlite3")
    core = Core(db=db, lxd=fake_lxd, events=EventBus(db), clock=clock)
    yield core
    core.operations.shutdown()
    db.close()


@pytest.fixture
def papi(pcore):
    with TestClient(admin_app(pcore)) as client:
        assert client.post("/1.0/deployments", json={
            "name": "web", "governor_webhook_url": "http://127.0.0.1:9/hook"}).status_code == 201
        yield client


def make_pet(api, **fields) -> None:
    body = {"name": "big", "member": "m3", "schedule": "Wed 14:00-16:00 UTC",
            "lead_time": 3600, "grace_period": 5, **fields}
    response = api.post("/1.0/pets", json=body)
    assert response.status_code == 201, response.json()


def make_shape(api, name: str, minimum: int = 0, maximum: int = 10, template=None,
               **config) -> None:
    response = api.post(SHAPES, json={"name": name, "instance_template": template or TEMPLATE,
                                      "scaling_minimum": minimum, "scaling_maximum": maximum,
                                      "config": config})
    assert response.status_code == 201, response.json()


def bulk(api, shape: str, count: int) -> list[str]:
    response = api.post(f"{SHAPES}/{shape}/instances", json={"count": count})
    assert response.status_code == 202, response.json()
    op = response.json()["metadata"]
    final = api.get(f"/1.0/operations/{op['id']}/wait", params={"timeout": 10}).json()
    assert final["metadata"]["status"] == "Success", final
    return list(op["metadata"]["locations"].values())


def test_pet_crud_with_etag_state_and_validation(papi, clock):
    make_pet(papi)
    assert papi.get("/1.0/pets").json()["metadata"] == ["/1.0/pets/big"]
    got = papi.get("/1.0/pets/big")
    body = got.json()["metadata"]
    assert (body["state"], body["next_change"], body["next_state"], body["members"]) == (
        "idle", "2026-12-02T13:00:00Z", "notice", ["m3"])
    etag = got.headers["ETag"]
    assert papi.patch("/1.0/pets/big", json={"lead_time": 60},
                      headers={"If-Match": etag}).status_code == 200
    assert error_of(papi.patch("/1.0/pets/big", json={"lead_time": 1},
                               headers={"If-Match": etag}))[0] == 412
    assert papi.get("/1.0/pets/big").json()["metadata"]["lead_time"] == 60
    assert error_of(papi.post("/1.0/pets", json={"name": "x", "member": "m9",
                                                 "schedule": "Mon 01:00-02:00"})) == (
        400, 'Cluster member "m9" does not exist')
    assert error_of(papi.post("/1.0/pets", json={"name": "x", "member": "m2",
                                                 "schedule": "Mon 1-2"}))[0] == 400
    assert error_of(papi.post("/1.0/pets", json={"name": "x", "member": "m2",
                                                 "cluster_group": "default",
                                                 "schedule": "Mon 01:00-02:00"})) == (
        400, 'Give either "member" or "cluster_group"')
    assert error_of(papi.post("/1.0/pets", json={"name": "big", "member": "m2",
                                                 "schedule": "Mon 01:00-02:00"}))[0] == 409
    put = papi.put("/1.0/pets/big", json={"member": "m3", "schedule": "Thu 00:00-01:00 UTC"})
    assert put.status_code == 200
    assert papi.get("/1.0/pets/big").json()["metadata"]["lead_time"] == 3600  # defaults
    clock.set(utc(2026, 12, 3, 0, 30))
    assert papi.get("/1.0/pets?recursion=1").json()["metadata"][0]["state"] == "busy"
    assert papi.delete("/1.0/pets/big").status_code == 200
    assert error_of(papi.get("/1.0/pets/big"))[0] == 404


def test_shape_key_is_checked_when_set(papi):
    assert error_of(papi.post(SHAPES, json={
        "name": "s", "instance_template": TEMPLATE, "scaling_maximum": 1,
        "config": {"placement.pets": "yes"}})) == (
        400, 'placement.pets must be "allow" or "deny", not "yes"')


def test_idle_pet_takes_opted_in_containers_only_and_none_during_notice(papi, clock,
                                                                       fake_lxd):
    fake_lxd.images["default"].add("vmimg")
    fake_lxd.image_types[("default", "vmimg")] = "virtual-machine"
    make_pet(papi)
    make_shape(papi, "cattle", **{"placement.pets": "allow"})
    make_shape(papi, "plain")
    make_shape(papi, "vm", template={"source": {"type": "image", "alias": "vmimg"},
                                   "type": "virtual-machine"},
               **{"placement.pets": "allow"})
    assert sorted(bulk(papi, "cattle", 3)) == THREE
    assert set(bulk(papi, "plain", 4)) == {"m1", "m2"}
    assert set(bulk(papi, "vm", 4)) == {"m1", "m2"}
    borrowed = papi.get("/1.0/pets/big").json()["metadata"]["borrowed"]
    assert [(b["shape"], b["location"]) for b in borrowed] == [("cattle", "m3")]
    # The instance listing marks it (LXD's object, with `borrowed_from`), and only it.
    listed = papi.get(f"{SHAPES}/cattle/instances", params={"recursion": 1}).json()
    assert sorted((i["location"], i.get("borrowed_from")) for i in listed["metadata"]) == [
        ("m1", None), ("m2", None), ("m3", "big")]
    one = next(i for i in listed["metadata"] if i["location"] == "m3")
    assert papi.get(f"{SHAPES}/cattle/instances/{one['name']}").json()["metadata"][
        "borrowed_from"] == "big"
    clock.set(utc(2026, 12, 2, 13, 30))  # notice
    assert set(bulk(papi, "cattle", 4)) == {"m1", "m2"}
    # A pet that allows VMs takes opted-in VMs while idle.
    clock.set(utc(2026, 12, 2, 17))
    assert papi.patch("/1.0/pets/big", json={"allow_vms": True}).status_code == 200
    assert "m3" in bulk(papi, "vm", 3)


def test_a_shape_only_on_the_pet_is_refused_saying_why(papi, fake_lxd):
    fake_lxd.cluster = [ClusterMember("m1"), ClusterMember("m2"),
                        ClusterMember("m3", groups=("petgroup",))]
    make_pet(papi, member="", cluster_group="petgroup")
    make_shape(papi, "plain", **{"placement.cluster_group": "petgroup"})
    response = papi.post(f"{SHAPES}/plain/instances", json={"count": 1})
    assert error_of(response) == (409, (
        'No cluster member may take the instance: m3: pet "big" (the shape has no '
        "placement.pets=allow)"))


# --- the duty ---------------------------------------------------------------------------


def scale_requests(core: Core) -> list[dict]:
    with core.db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT payload FROM deployments_webhook_deliveries WHERE event_type = "
            "'scale-request' ORDER BY id").scalars().all()
    return [json.loads(row)["metadata"] for row in rows]


def on_member(api, shape: str, member: str) -> list[str]:
    body = api.get(f"{SHAPES}/{shape}/instances", params={"recursion": 1}).json()["metadata"]
    return sorted(i["name"] for i in body if i.get("location") == member)


def test_notice_then_reclaim_with_replacements_first_and_no_second_notice(papi, pcore, clock,
                                                                          fake_lxd):
    make_pet(papi)
    make_shape(papi, "cattle", minimum=3, maximum=4, **{"placement.pets": "allow"})
    bulk(papi, "cattle", 3)
    duty = PetDuty(pcore)
    assert duty.tick() == 0
    clock.set(utc(2026, 12, 2, 13, 0))
    assert duty.tick() == 1
    [notice] = scale_requests(pcore)
    borrowed = [name for (_p, name), i in fake_lxd.instances.items() if i["location"] == "m3"]
    assert (notice["cause"], notice["pet"], notice["deadline"], notice["instances"]) == (
        "pet-reclaim", "big", "2026-12-02T14:00:00Z", borrowed)
    assert duty.tick() == 0 and len(scale_requests(pcore)) == 1  # told once
    # A duty made anew (a restart) does not tell it again: the store remembers.
    assert PetDuty(pcore).tick() == 0
    clock.set(utc(2026, 12, 2, 14, 0))
    assert duty.tick() == 1
    locations = sorted(i["location"] for i in fake_lxd.instances.values())
    assert "m3" not in locations and len(locations) == 3
    assert [name for _p, name in fake_lxd.deleted_instances] == borrowed
    body = papi.get("/1.0/pets/big").json()["metadata"]
    assert body["borrowed"] == [] and body["reclaimed_for"] == "2026-12-02T14:00:00Z"
    assert len(scale_requests(pcore)) == 1  # at the minimum still: no below-minimum


def test_without_room_the_pet_wins_and_a_below_minimum_request_says_why(papi, pcore, clock,
                                                                        fake_lxd):
    make_pet(papi)
    make_shape(papi, "cattle", minimum=3, maximum=3, **{"placement.pets": "allow"})
    bulk(papi, "cattle", 3)
    clock.set(utc(2026, 12, 2, 14, 30))  # past the deadline at once: notice, then reclaim
    assert PetDuty(pcore).tick() == 2
    notice, below = scale_requests(pcore)
    assert notice["cause"] == "pet-reclaim"
    assert (below["cause"], below["current"], below["count"]) == ("below-minimum", 2, 3)
    assert below["reason"].startswith('pet "big" was taken back') and \
        below["reason"].endswith("no room for replacements")
    assert all(i["location"] != "m3" for i in fake_lxd.instances.values())
    # Busy: nothing lands on the pet; once the window ended it takes instances again.
    assert bulk(papi, "cattle", 1)[0] in {"m1", "m2"}
    clock.set(utc(2026, 12, 2, 16, 0))
    PetDuty(pcore).tick()
    body = papi.get("/1.0/pets/big").json()["metadata"]
    assert (body["state"], body["notice_sent_for"], body["reclaimed_for"]) == (
        "idle", None, None)


def test_a_reclaim_cut_short_is_resumed_by_the_next_duty(papi, pcore, clock, fake_lxd):
    make_pet(papi)
    make_shape(papi, "cattle", maximum=6, **{"placement.pets": "allow"})
    bulk(papi, "cattle", 6)
    clock.set(utc(2026, 12, 2, 14, 0))
    duty = PetDuty(pcore)
    original = fake_lxd.delete_instance
    calls = []

    def failing_once(project, name):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("the service stopped here")
        original(project, name)

    fake_lxd.delete_instance = failing_once
    duty.tick()
    with pcore.db.read() as conn:
        state = conn.exec_driver_sql("SELECT notice_for, reclaimed_for FROM pets").one()
    assert tuple(state) == ("2026-12-02T14:00:00Z", "")  # the reclaim is not done
    assert len(papi.get("/1.0/pets/big").json()["metadata"]["borrowed"]) == 1
    PetDuty(pcore).tick()  # a restart
    body = papi.get("/1.0/pets/big").json()["metadata"]
    assert body["borrowed"] == [] and body["reclaimed_for"] == "2026-12-02T14:00:00Z"


# --- offers -----------------------------------------------------------------------------


def offers(core: Core) -> list[dict]:
    with core.db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT payload FROM deployments_webhook_deliveries WHERE event_type = "
            "'capacity-offer' ORDER BY id").scalars().all()
    return [json.loads(row)["metadata"] for row in rows]


def test_offers_name_the_idle_pet_what_fits_there_and_until_when(papi, pcore, clock, fake_lxd):
    gib = 2**30
    fake_lxd.member_resources["m3"] = {"cpu": {"total": 32},
                                       "memory": {"total": 64 * gib, "used": 0}}
    make_pet(papi)
    make_shape(papi, "cattle", maximum=100, template={**TEMPLATE, "config": {
        "limits.memory": "4GiB"}}, **{"placement.pets": "allow"})
    make_shape(papi, "plain", maximum=5)
    monitor = Monitor(pcore, pcore.events, EventSettings(), Debounce())
    assert monitor.capacity_pass() == 1
    [offer] = offers(pcore)
    assert offer["pets"] == {"big": {
        "members": ["m3"], "until": "2026-12-02T13:00:00Z",
        "busy_window": {"start": "2026-12-02T14:00:00Z", "end": "2026-12-02T16:00:00Z"},
        "shapes": {"cattle": {"count": 16, "limited_by": "memory"}}}}
    # One of three lands there (spread over three members): one fewer fits.
    bulk(papi, "cattle", 3)
    fake_lxd.member_resources["m3"]["memory"]["used"] = 4 * gib
    assert monitor.capacity_pass() == 1
    assert offers(pcore)[-1]["pets"]["big"]["shapes"]["cattle"]["count"] == 15
    clock.set(utc(2026, 12, 2, 13, 0))  # notice: no pet offered
    assert monitor.capacity_pass() == 1
    assert "pets" not in offers(pcore)[-1]
    clock.set(utc(2026, 12, 2, 16, 0))  # the window ended: offers resume
    assert monitor.capacity_pass() == 1
    assert offers(pcore)[-1]["pets"]["big"]["until"] == "2026-12-09T13:00:00Z"

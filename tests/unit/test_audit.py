"""The audit log: every change asked of the API, who asked, and how it ended."""

from __future__ import annotations

import logging

import pytest

from tests.certs import make_certificate

from .conftest import error_of
from .test_auth import INSTANCES, launch, wait

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores


def entries(api, **params) -> list[dict]:
    response = api.get("/1.0/audit", params=params)
    assert response.status_code == 200, response.json()
    return response.json()["metadata"]


def test_an_admin_change_is_recorded_with_who_what_and_the_result(api):
    assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    assert api.get("/1.0/deployments/web").status_code == 200  # reads are not recorded
    [entry] = entries(api)
    assert entry | {"id": 0, "created_at": ""} == {
        "id": 0, "created_at": "", "auth_method": "unix", "caller_kind": "admin",
        "identity": "unix", "fingerprint": "", "deployment_key": "", "method": "POST",
        "path": "/1.0/deployments", "project": "default", "status_code": 201,
        "operation": "", "error": ""}
    assert entry["created_at"]


def test_a_governor_launch_names_its_key_and_operation(world, api):
    operation = wait(world.rw, launch(world.rw, "web", "c1"))
    entry = entries(api)[-1]
    assert (entry["auth_method"], entry["caller_kind"], entry["deployment_key"]) == (
        "tls", "governor", "web/autoscaler")
    assert entry["identity"] == f"gov-rw ({world.certificates.rw.fingerprint[:12]})"
    assert entry["fingerprint"] == world.certificates.rw.fingerprint
    assert (entry["method"], entry["path"], entry["status_code"], entry["operation"]) == (
        "POST", INSTANCES.format(d="web"), 202, operation["id"])


def test_refused_attempts_of_known_callers_are_recorded_with_their_error(world, api):
    last = entries(api)[-1]["id"]
    launch(world.ro, "web", "c1")
    world.rw.post("/1.0/certificates", json={"certificate": make_certificate().pem,
                                             "type": "client"})
    api.post("/1.0/deployments", json={"name": "Not A Name!"})
    recorded = entries(api, since=last)
    assert [(e["identity"].split(" ")[0], e["status_code"]) for e in recorded] == [
        ("gov-ro", 403), ("gov-rw", 403), ("unix", 400)]
    # The key the refused write used is named (it reads the deployment, may not write).
    assert recorded[0]["deployment_key"] == "web/watcher"
    assert recorded[1]["deployment_key"] == ""  # no key reaches the management API
    assert recorded[0]["error"].startswith('Deployment key "watcher" is read-only')
    assert recorded[1]["error"].startswith("Not authorized: this needs an admin")


def test_anonymous_requests_are_logged_but_never_stored(world, api, caplog):
    last = entries(api)[-1]["id"]
    with caplog.at_level(logging.WARNING, logger="lxd_deployments.auth"):
        for _ in range(3):
            assert world.anonymous.post("/1.0/deployments", json={"name": "x"}) \
                .status_code == 401
    assert entries(api, since=last) == []
    assert "refused (401) POST /1.0/deployments" in caplog.text


def test_since_and_limit_page_through_the_log(api):
    for name in ("a1", "a2", "a3"):
        api.post("/1.0/deployments", json={"name": name})
    everything = entries(api)
    assert [e["path"] for e in entries(api, since=everything[0]["id"], limit=1)] == [
        everything[1]["path"]]
    assert error_of(api.get("/1.0/audit", params={"limit": 0}))[0] == 400


def test_no_certificate_key_or_token_is_ever_recorded(world, api, caplog):
    governor = make_certificate("new-governor")
    with caplog.at_level(logging.INFO):
        api.post("/1.0/deployments/web/keys", json={
            "name": "k2", "certificate": governor.pem, "role": "rw"})
        world.anonymous.get("/1.0/deployments", headers={"Authorization": "Bearer SECRET-TOKEN"})
        world.anonymous.post("/1.0/deployments", headers={"Authorization": "Bearer SECRET-TOKEN"})
    stored = str(entries(api))
    for secret in ("PRIVATE KEY", "SECRET-TOKEN", governor.pem.splitlines()[1]):
        assert secret not in stored
        assert secret not in caplog.text


def test_each_change_is_also_a_line_of_the_service_log(world, caplog):
    with caplog.at_level(logging.INFO, logger="lxd_deployments.audit"):
        wait(world.rw, launch(world.rw, "web", "c1"))
    assert f"POST {INSTANCES.format(d='web')} by gov-rw" in caplog.text
    assert "key web/autoscaler (tls): 202 operation" in caplog.text


def test_rows_stay_small_whatever_the_request(world, api):
    """A 10 KB query string and a long error are cut: a row holds about 1 KiB at most."""
    from lxd_deployments.store.audit import FIELD_LIMITS

    last = entries(api)[-1]["id"]
    world.ro.post(INSTANCES.format(d="web"), params={"junk": "x" * 10_000},
                  json={"instance_name": "c1"})
    [entry] = entries(api, since=last)
    assert entry["status_code"] == 403 and entry["path"].endswith("...")
    assert len(entry["path"]) == FIELD_LIMITS["path"]
    assert sum(len(str(v)) for v in entry.values()) < 1200


def test_a_caller_past_its_refusal_budget_gets_429_and_no_row_per_request(world, api,
                                                                          clients):
    from lxd_deployments.config import AuditSettings

    ro = clients(world.certificates.ro,
                 audit_settings=AuditSettings(refused_rate=0.01, refused_burst=3))
    last = entries(api)[-1]["id"]
    answers = [launch(ro, "web", f"c{n}") for n in range(10)]
    assert [a.status_code for a in answers] == [403] * 3 + [429] * 7
    assert error_of(answers[3])[0] == 429
    message = error_of(answers[3])[1]
    assert message.startswith("Too many refused requests from this certificate")
    assert int(answers[3].headers["Retry-After"]) >= 1
    recorded = entries(api, since=last)
    # Three refusals, then one 429 (one a minute at most is recorded).
    assert [(e["status_code"], e["deployment_key"]) for e in recorded] == \
        [(403, "web/watcher")] * 3 + [(429, "")]
    # Reads are not refused: the key still reads its deployment.
    assert ro.get("/1.0/deployments/web").status_code == 200
    # The admin socket has no budget.
    for _ in range(5):
        assert api.post("/1.0/deployments", json={"name": "Bad Name"}).status_code == 400


def test_the_budget_refills_and_accepted_requests_cost_nothing():
    from lxd_deployments.api.refusals import RefusalBudget

    now = [0.0]
    budget = RefusalBudget(rate=2.0, burst=2, clock=lambda: now[0])
    assert budget.check("a") == (0.0, False)
    budget.spend("a")
    budget.spend("a")
    assert budget.check("a") == (0.5, True)
    assert budget.check("a") == (0.5, False)  # one 429 recorded a minute at most
    assert budget.check("b") == (0.0, False)  # another certificate's budget is its own
    now[0] = 0.5
    assert budget.check("a") == (0.0, False)
    budget.spend("a")
    assert budget.check("a")[1] is False  # a new 429 within the minute: not recorded
    now[0] = 61.0
    budget.spend("a")
    budget.spend("a")
    assert budget.check("a")[1] is True


def test_prune_keeps_the_retention_and_the_newest_rows(core):
    from lxd_deployments.store import audit as store

    with core.db.write() as conn:
        for n in range(10):
            store.record(conn, store.AuditEntry(
                auth_method="tls", caller_kind="governor", identity="g", method="POST",
                path="/x", status_code=403, created_at=f"2026-01-01T00:00:{n:02d}+00:00"))
        assert store.prune(conn, recorded_before="2026-01-01T00:00:03+00:00",
                           keep_rows=100) == 3
        assert store.prune(conn, recorded_before="2000-01-01T00:00:00+00:00",
                           keep_rows=4) == 3
        assert [e.created_at[-8:-6] for e in store.list_entries(conn)] == \
            ["06", "07", "08", "09"]
        assert store.prune(conn, recorded_before="2027-01-01T00:00:00+00:00",
                           keep_rows=4) == 4
        assert store.size(conn) == 0

"""Several units as Juju runs their hooks: an added unit's first hooks, a leader that does
not hold the store, governors leaving, units departing, and the copy's order of steps.

The helpers are test_charm_cluster's: one application, `lxd-deployments/0` is this unit.
"""

from __future__ import annotations

import uuid

import pytest
import yaml
from ops import testing

import charm
from lxd_deployments_charm.paths import SERVICE_NAME

from .test_charm_cluster import (
    GOVERNOR,
    INTEGRATE,
    URL,
    WEB,
    _assert_on_postgresql,
    _config,
    _database,
    _governor,
    _moved,
    _ours,
    _peer,
    _plain_credentials,
    _server_secret,
)

# --- juju add-unit: the new unit's first hooks ---------------------------------------------


@pytest.mark.parametrize("planned", [2, 3])
def test_an_added_unit_does_not_start_a_store_of_its_own_before_the_peer_relation(
        ctx, serving, planned):
    # install runs before the peer relation's relation-created: nothing says yet which
    # store is the application's.
    state_out = ctx.run(ctx.on.install(), testing.State(leader=False,
                                                        planned_units=planned))

    assert state_out.unit_status == testing.WaitingStatus(
        "waiting for the cluster peer relation (this unit's service starts once it knows "
        "the application's store)")
    assert not serving.systemd.active and not serving.systemd.enabled
    assert ("restart", SERVICE_NAME) not in serving.systemd.calls


def test_the_first_unit_starts_at_install_without_the_peer_relation(ctx, serving):
    state_out = ctx.run(ctx.on.install(), testing.State(leader=True, planned_units=1))

    assert serving.systemd.active
    assert state_out.unit_status.name == "active"


def test_an_added_unit_joins_the_shared_store_in_its_first_hooks(ctx, serving, copy):
    peer, secret, pair = _moved(2)
    database = _database(**_plain_credentials())
    state = testing.State(leader=False, planned_units=2, secrets={secret})

    installed = ctx.run(ctx.on.install(), state)
    assert not serving.systemd.active
    with_peer = ctx.run(ctx.on.relation_created(peer), testing.State(
        leader=False, planned_units=2, relations={peer}, secrets={secret},
        unit_status=installed.unit_status))
    # The peer relation says the store moved, but no credentials yet: still stopped.
    assert not serving.systemd.active
    assert with_peer.unit_status.name == "blocked"

    joined = ctx.run(ctx.on.relation_created(database), testing.State(
        leader=False, planned_units=2, relations={peer, database}, secrets={secret}))

    _assert_on_postgresql(serving)
    assert serving.systemd.active
    assert copy.configs == []  # the store moved long ago: never copied again
    assert serving.paths.tls_cert.read_text() == pair.certificate
    assert joined.unit_status.name == "active"


def test_beside_other_units_a_service_never_runs_without_the_applications_identity(
        ctx, serving, copy):
    # The leader shared a service id and a secret this unit cannot read (yet).
    peer, _secret, _ = _moved(2)
    database = _database(**_plain_credentials())

    state_out = ctx.run(ctx.on.relation_changed(database), testing.State(
        leader=False, relations={peer, database}))  # the secret is not readable

    assert state_out.unit_status == testing.WaitingStatus(
        "waiting for the server certificate the leader shares")
    assert not serving.systemd.active


# --- a leader that does not hold the SQLite store -----------------------------------------


def test_a_leader_not_serving_still_answers_governors_for_the_unit_that_serves(
        ctx, serving, service):
    # lxd-deployments/1 holds the SQLite store and serves; this unit became the leader.
    peer, governor = _peer(2, **{"sqlite-unit": "lxd-deployments/1"}), _governor()

    state_out = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=True, relations={peer, governor}, config={"deployments": WEB}))

    out = state_out.get_relation(governor.id)
    # The application's answer names the key the serving unit makes for this relation...
    assert out.local_app_data == {
        "deployment": "web", "project": "default", "key_name": f"juju-relation-{governor.id}",
        "role": "rw", "certificate_fingerprint": GOVERNOR.fingerprint}
    # ...and no endpoint of this unit, whose service is stopped.
    assert _ours(out.local_unit_data) == {}
    assert not serving.systemd.active
    assert service.find_deployment("default", "web") is None  # its service made nothing


def test_a_leader_not_serving_passes_on_a_bad_request_as_the_error(ctx, serving):
    peer = _peer(2, **{"sqlite-unit": "lxd-deployments/1"})
    governor = testing.Relation("governor", remote_app_data={
        "certificate": GOVERNOR.certificate, "deployment": "web", "role": "root"})

    state_out = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=True, relations={peer, governor}))

    assert state_out.get_relation(governor.id).local_app_data == {
        "error": "invalid request: role: Input should be 'rw' or 'ro'"}


def test_with_nobody_serving_the_leader_grants_nothing(ctx, serving, copy):
    # On the shared store, the database relation gone: every unit is stopped.
    peer, secret, _ = _moved(2)
    governor = _governor()
    governor = testing.Relation("governor", id=governor.id,
                                remote_app_data=governor.remote_app_data,
                                local_app_data={"key_name": "juju-relation-9",
                                                "deployment": "web"})

    state_out = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=True, relations={peer, governor}, secrets={secret}))

    assert state_out.get_relation(governor.id).local_app_data == {}
    assert state_out.unit_status.name == "blocked"


# --- a governor relation removed ---------------------------------------------------------


def test_on_sqlite_only_the_unit_holding_the_store_revokes_a_removed_governors_key(
        ctx, serving, service):
    governor = _governor()
    # This unit (not the leader) holds the store and made the key.
    secret, _ = _server_secret()
    holder_peer = _peer(2, **{"sqlite-unit": "lxd-deployments/0",
                              "service-id": str(uuid.uuid4()), "server-secret": secret.id})
    state = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=False, relations={holder_peer, governor}, secrets={secret},
        config={"deployments": WEB}))
    assert service.find_key("default", "web", f"juju-relation-{governor.id}") is not None

    removed = ctx.run(ctx.on.relation_broken(state.get_relation(governor.id)), state)

    assert service.find_key("default", "web", f"juju-relation-{governor.id}") is None
    assert removed.unit_status.name == "blocked"  # two units, no shared store
    assert "could not revoke" not in removed.unit_status.message


def test_a_unit_not_holding_the_store_does_not_try_to_revoke_with_its_stopped_service(
        ctx, serving, service):
    governor = _governor()
    peer = _peer(2, **{"sqlite-unit": "lxd-deployments/1"})
    grant = {"key_name": f"juju-relation-{governor.id}", "deployment": "web",
             "project": "default", "role": "rw",
             "certificate_fingerprint": GOVERNOR.fingerprint}
    governor = testing.Relation("governor", id=governor.id,
                                remote_app_data=governor.remote_app_data,
                                local_unit_data=grant)
    serving.service_up = False  # its service is stopped: any call would fail

    state_out = ctx.run(ctx.on.relation_broken(governor), testing.State(
        leader=True, relations={peer, governor}))

    assert state_out.unit_status == testing.BlockedStatus(
        f"2 units and no shared store: {INTEGRATE} (until then this unit's service is "
        "stopped; lxd-deployments/1 serves)")


# --- juju remove-unit ----------------------------------------------------------------------


def test_on_the_shared_store_a_departing_unit_changes_nothing_for_the_others(
        ctx, serving, copy):
    peer, secret, _ = _moved(3)
    database = _database(**_plain_credentials())
    serving.systemd.active = serving.systemd.enabled = True

    state_out = ctx.run(ctx.on.relation_departed(peer, remote_unit=2, departing_unit=2),
                        testing.State(leader=True, relations={peer, database},
                                      secrets={secret}, planned_units=2))

    _assert_on_postgresql(serving)
    assert serving.systemd.active
    assert copy.configs == []
    assert state_out.unit_status.name == "active"


def test_three_units_the_store_holder_departs_and_the_leader_holds_a_store_again(
        ctx, serving):
    # lxd-deployments/2 held the SQLite store; it is being removed (no database yet).
    peer = testing.PeerRelation("cluster", local_app_data={
        "sqlite-unit": "lxd-deployments/2"}, peers_data={1: {}})

    state_out = ctx.run(ctx.on.relation_departed(peer, remote_unit=2, departing_unit=2),
                        testing.State(leader=True, relations={peer}, planned_units=2))

    assert state_out.get_relation(peer.id).local_app_data["sqlite-unit"] == \
        "lxd-deployments/0"
    assert serving.systemd.active  # one store serves: this one
    assert state_out.unit_status == testing.BlockedStatus(
        f"2 units and no shared store: {INTEGRATE} (until then only this unit serves "
        "governors, from its own store)")


# --- the copy's order of steps -------------------------------------------------------------


def test_the_service_is_stopped_before_its_config_names_postgresql(
        ctx, serving, copy, monkeypatch):
    peer, database = _peer(), _database(**_plain_credentials())
    serving.systemd.active = serving.systemd.enabled = True
    written: list[tuple[bool, bool]] = []  # (config names the database, service active)
    real = charm.render.ensure_file

    def ensure_file(path, content, mode=0o644):
        if path == serving.paths.config_file:
            written.append(("database" in yaml.safe_load(content), serving.systemd.active))
        return real(path, content, mode)

    monkeypatch.setattr(charm.render, "ensure_file", ensure_file)

    ctx.run(ctx.on.relation_changed(database), testing.State(
        leader=True, relations={peer, database}))

    assert (True, True) not in written
    assert (True, False) in written
    assert copy.service_active == [False]
    assert _config(serving)["database"] == URL and serving.systemd.active


def test_a_leader_change_half_way_the_new_leader_records_the_old_leaders_copy(
        ctx, serving, copy):
    # lxd-deployments/1 held the store, copied it and said so; then lost leadership
    # before recording the move. This unit, the new leader, records it without a copy.
    secret, _ = _server_secret()
    shared = {"service-id": str(uuid.uuid4()), "server-secret": secret.id,
              "sqlite-unit": "lxd-deployments/1"}
    peer = testing.PeerRelation("cluster", local_app_data=shared,
                                peers_data={1: {"store-copied": URL}})
    database = _database(**_plain_credentials())

    state_out = ctx.run(ctx.on.leader_elected(), testing.State(
        leader=True, relations={peer, database}, secrets={secret}))

    assert copy.configs == []
    data = state_out.get_relation(peer.id).local_app_data
    assert (data["store"], data["store-url"]) == ("postgresql", URL)
    _assert_on_postgresql(serving)


def test_the_governor_reaches_the_holder_when_the_leader_does_not_serve(
        ctx, serving, service):
    """Both units' answers, as a governor charm's library reads them together: ready,
    with the one endpoint of the unit that serves."""
    from tests.unit.lib.test_governor_lib import GOVERNOR_META, DummyGovernorCharm

    secret, pair = _server_secret()
    shared = {"service-id": str(uuid.uuid4()), "server-secret": secret.id,
              "sqlite-unit": "lxd-deployments/1"}
    governor = _governor()
    leader = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=True, relations={_peer(2, **shared), governor}, secrets={secret},
        config={"deployments": WEB}))
    holder_ctx = testing.Context(charm.LXDDeploymentsCharm, unit_id=1)
    holder = holder_ctx.run(holder_ctx.on.relation_changed(governor), testing.State(
        leader=False, secrets={secret}, config={"deployments": WEB}, relations={
            testing.PeerRelation("cluster", local_app_data=shared, peers_data={0: {}}),
            governor}))
    assert holder.unit_status.name == "blocked"  # two units, no shared store: it serves

    back = testing.Relation(
        "deployments", id=governor.id, local_app_data=governor.remote_app_data,
        remote_app_name="lxd-deployments",
        remote_app_data=leader.get_relation(governor.id).local_app_data,
        remote_units_data={0: leader.get_relation(governor.id).local_unit_data,
                           1: holder.get_relation(governor.id).local_unit_data})
    governor_ctx = testing.Context(DummyGovernorCharm, meta=GOVERNOR_META)
    with governor_ctx(governor_ctx.on.relation_changed(back, remote_unit=1),
                      testing.State(leader=True, relations={back})) as manager:
        manager.run()
        ((kind, access),) = manager.charm.seen

    assert kind == "ready"
    assert access.key_name == f"juju-relation-{governor.id}"
    assert [e.url for e in access.endpoints] == ["https://192.0.2.0:8444"]
    assert [e.server_certificate for e in access.endpoints] == [pair.certificate]
    assert service.find_key("default", "web", access.key_name) is not None

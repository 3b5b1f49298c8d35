"""Several units: the `cluster` peer relation (one identity), the `database` relation (one
store in PostgreSQL, the leader's SQLite copied there once), and what happens without it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from ops import testing

from lxd_deployments_charm import cluster
from lxd_deployments_charm.certs import make_client_pair
from lxd_deployments_charm.paths import SERVICE_NAME
from lxd_deployments_charm.store_move import CopyResult

GOVERNOR = make_client_pair("governor")
WEB = "web: {shapes: {frontend: {image: busybox, max: 3}}}"
USER, PASSWORD = "relation-7", "pw-0123456789abcdef"
URL = f"postgresql://{USER}@10.1.2.3:5432/lxd_deployments"
INTEGRATE = "`juju integrate lxd-deployments postgresql`"


def _config(workload) -> dict:
    return yaml.safe_load(workload.paths.config_file.read_text())


def _peer(units: int = 1, **app_data: str) -> testing.PeerRelation:
    return testing.PeerRelation(
        "cluster", interface="lxd_deployments_cluster", local_app_data=app_data,
        peers_data={i: {} for i in range(1, units)})


def _database(**app_data: str) -> testing.Relation:
    return testing.Relation("database", interface="postgresql_client",
                            remote_app_name="postgresql", remote_app_data=app_data)


def _plain_credentials() -> dict[str, str]:
    return {"database": "lxd_deployments", "endpoints": "10.1.2.3:5432,10.1.2.4:5432",
            "username": USER, "password": PASSWORD, "version": "16.4"}


def _ours(databag: dict[str, str]) -> dict[str, str]:
    """A unit databag without the addresses Juju itself puts there."""
    return {k: v for k, v in databag.items()
            if k not in ("egress-subnets", "ingress-address", "private-address")}


def _governor() -> testing.Relation:
    return testing.Relation("governor", interface="lxd-deployments-governor",
                            remote_app_name="autoscaler", remote_app_data={
                                "certificate": GOVERNOR.certificate, "deployment": "web"})


def _server_secret() -> tuple[testing.Secret, cluster.KeyPair]:
    pair = cluster.seed_server_pair(Path("/nonexistent"), "lxd-deployments")
    return testing.Secret(tracked_content=cluster.secret_content(pair), owner="app"), pair


def _moved(units: int = 2) -> tuple[testing.PeerRelation, testing.Secret, cluster.KeyPair]:
    secret, pair = _server_secret()
    peer = _peer(units, **{"service-id": str(uuid.uuid4()), "server-secret": secret.id,
                           "store": "postgresql", "store-url": URL})
    return peer, secret, pair


# --- the peer relation: one identity --------------------------------------------------------


def test_the_leader_shares_a_service_id_and_the_server_certificate_as_a_secret(
        ctx, serving):
    serving.paths.state_dir.joinpath("service-id").write_text(
        "6a0c4a4e-8d3c-4e59-9b0c-2f1f8f2f7b11\n")
    peer = _peer()

    state_out = ctx.run(ctx.on.relation_created(peer), testing.State(
        leader=True, relations={peer}))

    data = state_out.get_relation(peer.id).local_app_data
    # The unit's own service id (its instances carry it) becomes the application's.
    assert data["service-id"] == "6a0c4a4e-8d3c-4e59-9b0c-2f1f8f2f7b11"
    secret = state_out.get_secret(id=data["server-secret"])
    content = secret.tracked_content
    assert "PRIVATE KEY" in content["private-key"]
    assert "PRIVATE KEY" not in json.dumps(data)  # the key only inside the secret
    config = _config(serving)
    assert config["service_id"] == data["service-id"]
    assert config["tls"] == {"cert": str(serving.paths.tls_cert),
                             "key": str(serving.paths.tls_key)}
    assert serving.paths.tls_cert.read_text() == content["certificate"]
    assert serving.paths.tls_key.read_text() == content["private-key"]
    assert serving.paths.tls_key.stat().st_mode & 0o777 == 0o600
    assert "database" not in config  # one unit: its SQLite store
    assert state_out.unit_status.name == "active"


def test_a_non_leader_serves_the_leaders_certificate_and_service_id(ctx, serving):
    secret, pair = _server_secret()
    service_id = str(uuid.uuid4())
    peer = _peer(1, **{"service-id": service_id, "server-secret": secret.id})

    ctx.run(ctx.on.update_status(), testing.State(
        leader=False, relations={peer}, secrets={secret}))

    assert _config(serving)["service_id"] == service_id
    assert serving.paths.tls_cert.read_text() == pair.certificate
    assert serving.paths.tls_key.read_text() == pair.private_key


def test_the_workers_option_is_rendered_and_1_is_the_services_default(ctx, workload):
    ctx.run(ctx.on.config_changed(), testing.State(leader=True))
    assert "workers" not in _config(workload)

    ctx.run(ctx.on.config_changed(), testing.State(leader=True, config={"workers": 4}))
    assert _config(workload)["workers"] == 4

    state_out = ctx.run(ctx.on.config_changed(), testing.State(
        leader=True, config={"workers": 0}))
    assert state_out.unit_status.name == "blocked"
    assert "workers" in state_out.unit_status.message


# --- two and three units without the database: blocked, one store only -------------------------


@pytest.mark.parametrize("units", [2, 3])
def test_without_a_database_only_the_leader_serves_and_both_say_what_to_do(
        ctx, serving, service, units):
    peer, governor = _peer(units), _governor()

    leader = ctx.run(ctx.on.update_status(), testing.State(
        leader=True, relations={peer, governor}, config={"deployments": WEB}))

    assert leader.unit_status == testing.BlockedStatus(
        f"{units} units and no shared store: {INTEGRATE} (until then only this unit "
        "serves governors, from its own store)")
    assert serving.systemd.active
    assert leader.get_relation(governor.id).local_unit_data["endpoint"]
    assert leader.get_relation(peer.id).local_app_data["sqlite-unit"] == "lxd-deployments/0"

    serving.systemd.enabled = True
    follower = ctx.run(ctx.on.update_status(), testing.State(
        leader=False, relations={peer, governor},
        config={"deployments": WEB}))

    assert follower.unit_status == testing.BlockedStatus(
        f"{units} units and no shared store: {INTEGRATE} (until then this unit's service "
        "is stopped; the leader serves)")  # the leader has not pinned the store yet
    assert not serving.systemd.active
    assert not serving.systemd.enabled  # not started at boot either
    assert ("stop", SERVICE_NAME) in serving.systemd.calls
    assert _ours(follower.get_relation(governor.id).local_unit_data) == {}


# --- the database relation ---------------------------------------------------------------------


def test_the_leader_asks_for_a_database_with_the_credentials_in_a_secret(ctx, workload):
    database = _database()

    state_out = ctx.run(ctx.on.relation_created(database), testing.State(
        leader=True, relations={database, _peer()}))

    assert state_out.get_relation(database.id).local_app_data == {
        "database": "lxd_deployments", "requested-secrets": '["username", "password"]'}
    assert state_out.unit_status == testing.WaitingStatus(
        "waiting for PostgreSQL's credentials")
    assert "database" not in _config(workload)  # still SQLite meanwhile


def _assert_on_postgresql(workload) -> None:
    config = _config(workload)
    assert config["database"] == URL
    assert config["database_password_file"] == str(workload.paths.database_password_file)
    assert workload.paths.database_password_file.read_text() == PASSWORD
    assert workload.paths.database_password_file.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in workload.paths.config_file.read_text()


def test_plain_credentials_the_leader_copies_its_store_once_then_switches(
        ctx, serving, copy):
    peer, database = _peer(), _database(**_plain_credentials())
    state = testing.State(leader=True, relations={peer, database})
    restarts = serving.systemd.restarts

    state_out = ctx.run(ctx.on.relation_changed(database), state)

    assert len(copy.configs) == 1
    assert copy.configs[0]["database"] == URL  # the copy reads the same config
    assert copy.service_active == [False]  # nothing written to SQLite after the copy
    _assert_on_postgresql(serving)
    assert serving.systemd.active and serving.systemd.restarts > restarts
    data = state_out.get_relation(peer.id).local_app_data
    assert (data["store"], data["store-url"]) == ("postgresql", URL)
    assert state_out.unit_status.name == "active"

    # Any later hook, a database change included: never copied again.
    again = ctx.run(ctx.on.update_status(), state_out)
    ctx.run(ctx.on.relation_changed(again.get_relation(database.id)), again)
    assert len(copy.configs) == 1


def test_credentials_in_a_secret(ctx, serving, copy):
    secret = testing.Secret(tracked_content={"username": USER, "password": PASSWORD})
    credentials = {k: v for k, v in _plain_credentials().items()
                   if k not in ("username", "password")}
    database = _database(**credentials, **{"secret-user": secret.id})

    state_out = ctx.run(ctx.on.relation_changed(database), testing.State(
        leader=True, relations={_peer(), database}, secrets={secret}))

    assert len(copy.configs) == 1
    _assert_on_postgresql(serving)
    assert state_out.unit_status.name == "active"


def test_a_refused_copy_blocks_keeps_sqlite_and_is_retried_only_on_a_database_change(
        ctx, serving, copy):
    copy.result = CopyResult(False, "the database holds another service's data")
    peer, database = _peer(), _database(**_plain_credentials())

    state_out = ctx.run(ctx.on.relation_changed(database), testing.State(
        leader=True, relations={peer, database}))

    assert state_out.unit_status.name == "blocked"
    assert "could not copy the SQLite store into PostgreSQL: the database holds another " \
           "service's data; the service stays on its SQLite store" \
           in state_out.unit_status.message
    assert "database" not in _config(serving)
    assert not serving.paths.database_password_file.exists()
    assert serving.systemd.active  # back on SQLite
    assert "store" not in state_out.get_relation(peer.id).local_app_data

    later = ctx.run(ctx.on.update_status(), state_out)  # no stop-and-copy every hook
    assert len(copy.configs) == 1
    assert later.unit_status == state_out.unit_status

    copy.result = CopyResult(True, "copied")
    fixed = ctx.run(ctx.on.relation_changed(later.get_relation(database.id)), later)
    assert len(copy.configs) == 2
    _assert_on_postgresql(serving)
    assert fixed.unit_status.name == "active"


def test_a_non_leader_waits_for_the_leaders_copy_with_its_service_stopped(
        ctx, serving, copy):
    database = _database(**_plain_credentials())
    secret, _ = _server_secret()
    peer = _peer(2, **{"service-id": str(uuid.uuid4()), "server-secret": secret.id})

    state_out = ctx.run(ctx.on.relation_changed(database), testing.State(
        leader=False, relations={peer, database}, secrets={secret}))

    assert copy.configs == []
    assert not serving.systemd.active
    assert state_out.unit_status == testing.WaitingStatus(
        "waiting for the leader to copy its store into PostgreSQL (this unit's service is "
        "stopped until then)")


def test_on_the_shared_store_a_non_leader_switches_and_serves_the_leaders_keys(
        ctx, serving, service, copy):
    peer, secret, pair = _moved(2)
    database, governor = _database(**_plain_credentials()), _governor()
    # The leader made the deployment and the governor's key in the shared store.
    leader = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=True, relations={peer, database, governor}, secrets={secret},
        config={"deployments": WEB}))
    assert leader.get_relation(governor.id).local_app_data["key_name"]

    follower = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=False, relations={peer, database, governor}, secrets={secret},
        config={"deployments": WEB}))

    assert copy.configs == []
    _assert_on_postgresql(serving)
    unit_data = follower.get_relation(governor.id).local_unit_data
    assert unit_data["key_name"] == f"juju-relation-{governor.id}"
    assert unit_data["server_certificate"] == pair.certificate  # the same on every unit
    assert follower.unit_status.name == "active"


def test_a_non_leader_never_makes_a_key_in_the_shared_store(ctx, serving, service, copy):
    peer, secret, _ = _moved(2)
    database, governor = _database(**_plain_credentials()), _governor()
    service.create_deployment("default", {"name": "web"})

    follower = ctx.run(ctx.on.relation_changed(governor), testing.State(
        leader=False, relations={peer, database, governor}, secrets={secret}))

    assert service.find_key("default", "web", f"juju-relation-{governor.id}") is None
    assert _ours(follower.get_relation(governor.id).local_unit_data) == {}


def test_a_new_leader_on_the_shared_store_takes_over_without_copying(
        ctx, serving, service, copy):
    peer, secret, _ = _moved(3)
    database = _database(**_plain_credentials())

    state_out = ctx.run(ctx.on.leader_elected(), testing.State(
        leader=True, relations={peer, database}, secrets={secret},
        config={"deployments": WEB}))

    assert copy.configs == []
    _assert_on_postgresql(serving)
    assert service.find_deployment("default", "web") is not None  # it reconciles now
    assert state_out.unit_status.name == "active"


def test_the_database_relation_departing_stops_the_service_and_keeps_the_data_there(
        ctx, serving, copy):
    peer, secret, _ = _moved(2)
    database, governor = _database(**_plain_credentials()), _governor()
    serving.systemd.active = serving.systemd.enabled = True

    state_out = ctx.run(ctx.on.relation_broken(database), testing.State(
        leader=True, relations={peer, database, governor}, secrets={secret}))

    assert state_out.unit_status == testing.BlockedStatus(
        f"the database relation is gone: the application's data stays in PostgreSQL "
        f"({URL}); this unit's service is stopped and does not fall back to its stale "
        f"SQLite store: {INTEGRATE}")
    assert not serving.systemd.active and not serving.systemd.enabled
    assert not serving.paths.database_password_file.exists()
    assert _ours(state_out.get_relation(governor.id).local_unit_data) == {}
    assert copy.configs == []

    # Related again (a new relation, new credentials): back on PostgreSQL, no copy of
    # the stale SQLite store.
    again = _database(**_plain_credentials())
    back = ctx.run(ctx.on.relation_changed(again), testing.State(
        leader=True, relations={peer, again}, secrets={secret}))
    assert copy.configs == []
    _assert_on_postgresql(serving)
    assert back.unit_status.name == "active"


def test_a_new_leader_without_a_database_does_not_swap_the_store_governors_use(
        ctx, serving, service):
    # lxd-deployments/1 served from its SQLite store; this unit (0) becomes the leader.
    peer, governor = _peer(2, **{"sqlite-unit": "lxd-deployments/1"}), _governor()
    serving.systemd.active = serving.systemd.enabled = True

    state_out = ctx.run(ctx.on.leader_elected(), testing.State(
        leader=True, relations={peer, governor}, config={"deployments": WEB}))

    assert state_out.get_relation(peer.id).local_app_data["sqlite-unit"] == \
        "lxd-deployments/1"
    assert state_out.unit_status == testing.BlockedStatus(
        f"2 units and no shared store: {INTEGRATE} (until then this unit's service is "
        "stopped; lxd-deployments/1 serves)")
    assert not serving.systemd.active
    assert service.find_deployment("default", "web") is None  # it does not reconcile
    assert _ours(state_out.get_relation(governor.id).local_unit_data) == {}


def test_when_the_store_holder_has_gone_the_leader_holds_the_store(ctx, serving):
    peer = _peer(2, **{"sqlite-unit": "lxd-deployments/7"})  # removed long ago

    state_out = ctx.run(ctx.on.update_status(), testing.State(
        leader=True, relations={peer}))

    assert state_out.get_relation(peer.id).local_app_data["sqlite-unit"] == \
        "lxd-deployments/0"
    assert serving.systemd.active


def test_a_non_leader_holding_the_store_copies_it_and_the_leader_records_the_move(
        ctx, serving, copy):
    secret, _ = _server_secret()
    shared = {"service-id": str(uuid.uuid4()), "server-secret": secret.id,
              "sqlite-unit": "lxd-deployments/0"}
    database = _database(**_plain_credentials())

    holder = ctx.run(ctx.on.relation_changed(database), testing.State(
        leader=False, relations={_peer(2, **shared), database}, secrets={secret}))

    assert len(copy.configs) == 1  # the unit with the data copies, not the leader
    _assert_on_postgresql(serving)
    told = next(r for r in holder.relations if r.endpoint == "cluster")
    assert told.local_unit_data["store-copied"] == URL

    # The leader (another unit) sees it: records the move and switches, without a copy.
    leader_peer = testing.PeerRelation(
        "cluster", interface="lxd_deployments_cluster",
        local_app_data={**shared, "sqlite-unit": "lxd-deployments/1"},
        peers_data={1: {"store-copied": URL}})
    leader = ctx.run(ctx.on.relation_changed(leader_peer, remote_unit=1), testing.State(
        leader=True, relations={leader_peer, database}, secrets={secret}))

    assert len(copy.configs) == 1
    data = leader.get_relation(leader_peer.id).local_app_data
    assert (data["store"], data["store-url"]) == ("postgresql", URL)
    _assert_on_postgresql(serving)
    assert leader.unit_status.name == "active"

"""The `lxd` relation to charm-lxd (interface `lxd-https`)."""

from __future__ import annotations

import yaml
from ops import testing

from lxd_deployments_charm.certs import make_client_pair

LXD_CERT = make_client_pair("lxd-server").certificate


def _relation(**data) -> testing.Relation:
    return testing.Relation("lxd", interface="lxd-https", remote_app_name="lxd", **data)


def _config(workload) -> dict:
    return yaml.safe_load(workload.paths.config_file.read_text())


def test_our_certificate_goes_out_restricted_to_our_projects(ctx, workload):
    relation = _relation()
    state_in = testing.State(leader=True, relations={relation}, config={
        "deployments": "web: {project: shop}\nci: {project: builds}"})

    state_out = ctx.run(ctx.on.relation_created(relation), state_in)

    sent = state_out.get_relation(relation.id).local_unit_data
    assert sent["version"] == "1.0"
    assert sent["projects"] == "builds,shop"
    assert sent["certificate"] == workload.paths.lxd_client_cert.read_text()
    assert "PRIVATE KEY" not in "".join(sent.values())
    assert workload.paths.lxd_client_key.stat().st_mode & 0o777 == 0o600
    assert state_out.unit_status == testing.WaitingStatus(
        "waiting for LXD's address and certificate on the lxd relation")


def test_allowed_projects_win_over_the_deployments_projects(ctx, workload):
    relation = _relation()
    state_in = testing.State(leader=True, relations={relation}, config={
        "projects": "p1,p2", "deployments": "web: {project: p1}"})

    state_out = ctx.run(ctx.on.relation_created(relation), state_in)

    assert state_out.get_relation(relation.id).local_unit_data["projects"] == "p1,p2"


def test_a_standalone_lxd_answer_switches_the_service_to_https(ctx, workload):
    relation = _relation(remote_units_data={0: {
        "version": "1.0", "certificate": LXD_CERT, "certificate_fingerprint": "ab",
        "addresses": "10.0.0.5:8443,10.0.0.6:8443"}})

    state_out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0),
                        testing.State(leader=True, relations={relation}))

    assert _config(workload)["lxd"] == {
        "url": "https://10.0.0.5:8443",
        "client_cert": str(workload.paths.lxd_client_cert),
        "client_key": str(workload.paths.lxd_client_key),
        "server_cert": str(workload.paths.lxd_server_cert)}
    assert workload.paths.lxd_server_cert.read_text().strip() == LXD_CERT.strip()
    assert workload.systemd.restarts == 1
    assert state_out.unit_status.name == "active"


def test_a_clustered_lxd_answers_in_its_app_databag(ctx, workload):
    relation = _relation(remote_app_data={
        "version": "1.0", "certificate": LXD_CERT, "addresses": "10.0.0.7:8443"})

    ctx.run(ctx.on.relation_changed(relation), testing.State(leader=False,
                                                             relations={relation}))

    assert _config(workload)["lxd"]["url"] == "https://10.0.0.7:8443"


def test_an_unknown_interface_version_blocks(ctx, workload):
    relation = _relation(remote_units_data={0: {
        "version": "2.0", "certificate": LXD_CERT, "addresses": "10.0.0.5:8443"}})

    state_out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0),
                        testing.State(leader=True, relations={relation}))

    assert state_out.unit_status == testing.BlockedStatus(
        "lxd relation: unsupported lxd-https version 2.0 (this charm speaks 1.0)")
    assert workload.systemd.restarts == 0


def test_partial_data_is_waited_for(ctx, workload):
    relation = _relation(remote_units_data={0: {"version": "1.0", "addresses": ""}})

    state_out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0),
                        testing.State(leader=True, relations={relation}))

    assert state_out.unit_status.name == "waiting"


def test_breaking_the_relation_goes_back_to_the_local_socket(ctx, workload):
    relation = _relation(remote_units_data={0: {
        "version": "1.0", "certificate": LXD_CERT, "addresses": "10.0.0.5:8443"}})
    state = ctx.run(ctx.on.relation_changed(relation, remote_unit=0),
                    testing.State(leader=True, relations={relation}))

    state_out = ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)

    assert _config(workload)["lxd"] == {"socket": str(workload.lxd_socket)}
    assert workload.systemd.restarts == 2
    assert state_out.unit_status.name == "active"

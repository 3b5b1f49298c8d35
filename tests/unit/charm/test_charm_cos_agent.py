"""The `cos-agent` relation: alert rules, the dashboard and the metrics scrape job (mTLS
with a `metrics` certificate the service trusts) in the unit databag."""

from __future__ import annotations

import json

import pytest
import yaml
from ops import testing

from lxd_deployments_charm import cos_agent
from lxd_deployments_charm.certs import fingerprint, make_client_pair

SERVER = make_client_pair("server")
REPO_SRC = cos_agent.SRC


@pytest.fixture
def serving(workload):
    workload.paths.state_dir.mkdir(parents=True, exist_ok=True)
    workload.paths.server_cert.write_text(SERVER.certificate)
    return workload


def _cos() -> testing.Relation:
    return testing.Relation("cos-agent", interface="cos_agent",
                            remote_app_name="grafana-agent")


def _config_of(state_out, relation) -> dict:
    data = state_out.get_relation(relation.id).local_unit_data
    return cos_agent.CosAgentUnitData.model_validate_json(data["config"]).model_dump()


def test_the_databag_carries_rules_dashboard_and_a_mtls_scrape_job(ctx, serving, service):
    relation = _cos()

    state_out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), testing.State(
        leader=True, relations={relation}))

    config = _config_of(state_out, relation)
    # The alert rules, every one labelled with the topology (cosl scopes the expressions
    # too where its cos-tool binary is installed; the charm does not ship it).
    rules = [r for g in config["metrics_alert_rules"]["groups"] for r in g["rules"]]
    expected = yaml.safe_load((REPO_SRC / "prometheus_alert_rules" /
                               "lxd_deployments.rules").read_text())
    assert {r["alert"] for r in rules} == {r["alert"] for g in expected["groups"]
                                           for r in g["rules"]}
    for rule in rules:
        assert rule["labels"]["juju_application"] == "lxd-deployments"
        assert rule["labels"]["juju_charm"] == "lxd-deployments"
        assert rule["labels"]["juju_model"] and rule["labels"]["juju_model_uuid"]
    # The dashboard, LZMA+base64 encoded, decodes to the file shipped in the charm.
    shipped = json.loads((REPO_SRC / "grafana_dashboards" / "lxd-deployments.json")
                         .read_text())
    assert [cos_agent.decode_dashboard(d) for d in config["dashboards"]] == [shipped]
    # One scrape job: the service's metrics over HTTPS with the metrics certificate.
    [job] = config["metrics_scrape_jobs"]
    assert job["job_name"] == "lxd-deployments_0_lxd_deployments"
    assert job["metrics_path"] == "/1.0/metrics"
    assert job["scheme"] == "https"
    assert job["static_configs"] == [{"targets": ["localhost:8444"]}]
    tls = job["tls_config"]
    assert tls["ca"] == SERVER.certificate
    assert tls["server_name"] == "localhost"
    assert tls["cert"] == serving.paths.metrics_cert.read_text()
    assert tls["key_file"] == str(serving.paths.metrics_key)
    assert serving.paths.metrics_key.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" in serving.paths.metrics_key.read_text()
    assert "PRIVATE KEY" not in json.dumps(dict(
        state_out.get_relation(relation.id).local_unit_data))
    # The service trusts that certificate, as the metrics type only.
    trusted = service.find_certificate(fingerprint(tls["cert"]))
    assert trusted["type"] == "metrics"
    assert config["log_alert_rules"] == {} and config["log_slots"] == []


def test_a_specific_listen_address_is_the_scrape_target(ctx, serving):
    relation = _cos()

    state_out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), testing.State(
        leader=True, relations={relation},
        config={"listen-address": "10.0.0.5", "port": 9444}))

    [job] = _config_of(state_out, relation)["metrics_scrape_jobs"]
    assert job["static_configs"] == [{"targets": ["10.0.0.5:9444"]}]


def test_without_https_no_scrape_job_and_the_unit_says_why(ctx, serving):
    relation = _cos()

    state_out = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), testing.State(
        leader=True, relations={relation}, config={"port": 0}))

    config = _config_of(state_out, relation)
    assert config["metrics_scrape_jobs"] == []
    assert config["dashboards"]  # the rules and the dashboard still go
    assert state_out.unit_status == testing.BlockedStatus(
        "cos-agent: the metrics are served over HTTPS only, and port is 0")


def test_the_relation_gone_the_metrics_certificate_is_no_longer_trusted(
        ctx, serving, service):
    relation = _cos()
    state = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), testing.State(
        leader=True, relations={relation}))
    certificate = serving.paths.metrics_cert.read_text()
    assert service.find_certificate(fingerprint(certificate)) is not None

    ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)

    assert service.find_certificate(fingerprint(certificate)) is None
    assert not serving.paths.metrics_key.exists()

"""The alert rules and the dashboard the charm ships name only metrics the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from lxd_deployments import metrics_export

SRC = Path(__file__).resolve().parents[2] / "src"


def _exported(core) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics_export.render(core).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def _named(expr: str) -> set[str]:
    return set(re.findall(r"\blxd_deployments_[a-z_]+", expr))


def test_alert_rules_cover_the_three_cases_with_exported_metrics(core):
    rules = yaml.safe_load((SRC / "prometheus_alert_rules" / "lxd_deployments.rules")
                           .read_text())["groups"][0]["rules"]
    exported = _exported(core) | {"lxd_deployments_webhook_attempts_total"}

    assert {r["alert"] for r in rules} == {
        "LXDDeploymentsShapeBelowMinimum", "LXDDeploymentsWebhookDeliveriesFailing",
        "LXDDeploymentsLXDUnreachable"}
    for rule in rules:
        assert _named(rule["expr"]) <= exported, rule["alert"]
        assert rule["for"]


def test_the_dashboard_queries_exported_metrics(core):
    dashboard = json.loads((SRC / "grafana_dashboards" / "lxd-deployments.json").read_text())
    exported = _exported(core) | {f"lxd_deployments_{n}_total" for n in (
        "launches", "deletes", "webhook_attempts", "outside_changes")} | {
        "lxd_deployments_launch_duration_seconds_bucket"}

    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert _named(target["expr"]) <= exported, panel["title"]

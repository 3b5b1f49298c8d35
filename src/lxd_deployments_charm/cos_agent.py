"""The provider side of the `cos_agent` interface (the `cos-agent` relation to a
Grafana Agent / OpenTelemetry collector subordinate on the same machine).

Ours, written from the published interface specification (charm-relation-interfaces
`cos_agent/v0`: the unit databag's `config` key holding one JSON object) and using the
observability team's `cosl` package for what it offers: the Juju topology, alert-rule
handling (topology labels injected into every rule and its expression) and the LZMA+base64
dashboard encoding. The `cos_agent` charm library itself is not published as a Python
package, so it cannot be installed and pinned here; swap this module for it once it is.

The databag (the provider's unit databag, key `config`)::

    {"metrics_alert_rules": {"groups": [...]},   # Prometheus rules, topology-labelled
     "log_alert_rules": {},
     "dashboards": ["<base64 of LZMA of the dashboard JSON>", ...],
     "metrics_scrape_jobs": [{<a Prometheus scrape_config>}, ...],
     "log_slots": []}

Nothing here imports ops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosl import JujuTopology, LZMABase64
from cosl.rules import AlertRules
from pydantic import BaseModel, ConfigDict

SRC = Path(__file__).resolve().parent.parent
RULES_DIR = SRC / "prometheus_alert_rules"
DASHBOARDS_DIR = SRC / "grafana_dashboards"
DATABAG_KEY = "config"
METRICS_PATH = "/1.0/metrics"
# The name the scrape job verifies the server certificate against (one of its SANs).
SERVER_NAME = "localhost"


class CosAgentUnitData(BaseModel):
    """The `config` object, as the interface schema describes it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    metrics_alert_rules: dict[str, Any]
    log_alert_rules: dict[str, Any]
    dashboards: list[str]
    metrics_scrape_jobs: list[dict[str, Any]]
    log_slots: list[str]


@dataclass(frozen=True)
class ScrapeTarget:
    """How the agent on this machine reaches the service's metrics.

    The service serves `/1.0/metrics` over HTTPS only, to admins and `metrics`-type
    client certificates. The job carries the public parts inline (the server certificate
    to verify against, the metrics client certificate) and the client key as a *file*
    path on this machine: a private key never goes into relation data.
    """

    address: str  # host:port the agent connects to
    server_certificate: str  # PEM: the CA to verify the (self-signed) server certificate
    client_certificate: str  # PEM: the metrics certificate the service trusts
    client_key_file: str  # path of its key (0600, root), read by the agent on this machine


def scrape_job(target: ScrapeTarget) -> dict[str, Any]:
    """One Prometheus scrape_config for the service's metrics over mTLS."""
    return {
        "job_name": "lxd_deployments",
        "metrics_path": METRICS_PATH,
        "scheme": "https",
        "static_configs": [{"targets": [target.address]}],
        "tls_config": {
            "ca": target.server_certificate,
            "server_name": SERVER_NAME,
            "cert": target.client_certificate,
            "key_file": target.client_key_file,
        },
    }


def encode_dashboard(raw: bytes | str) -> str:
    return LZMABase64.compress(raw)


def decode_dashboard(encoded: str) -> dict[str, Any]:
    return json.loads(LZMABase64.decompress(encoded))


def alert_rules(topology: JujuTopology, rules_dir: Path = RULES_DIR) -> dict[str, Any]:
    rules = AlertRules(query_type="promql", topology=topology)
    rules.add_path(str(rules_dir), recursive=False)
    return rules.as_dict()


def dashboards(dashboards_dir: Path = DASHBOARDS_DIR) -> list[str]:
    return [encode_dashboard(path.read_bytes())
            for path in sorted(dashboards_dir.glob("*.json"))]


def unit_data(topology: JujuTopology, targets: list[ScrapeTarget], *,
              app_name: str) -> CosAgentUnitData:
    """The whole `config` object for this unit; job names carry the app name and an index,
    as the interface's agents expect (unique across the applications they scrape)."""
    jobs = []
    for index, target in enumerate(targets):
        job = scrape_job(target)
        job["job_name"] = f"{app_name}_{index}_{job['job_name']}"
        jobs.append(job)
    return CosAgentUnitData(metrics_alert_rules=alert_rules(topology), log_alert_rules={},
                            dashboards=dashboards(), metrics_scrape_jobs=jobs, log_slots=[])


def databag(data: CosAgentUnitData) -> dict[str, str]:
    """What goes into the unit databag."""
    return {DATABAG_KEY: data.model_dump_json()}

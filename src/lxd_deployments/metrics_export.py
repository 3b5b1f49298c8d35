"""Prometheus metrics of the service, in OpenMetrics text (as LXD's `GET /1.0/metrics`).

Two kinds, kept apart on purpose:

- *Events* (launches, deletes, refusals, webhook attempts, outside changes, launch
  latency) are counted where they happen, by the few calls core makes into this module
  (`launch_accepted`, `refused`, ...). They live in one process-wide registry, as the
  official client intends: a counter is a fact about this process since it started, and
  Prometheus' `rate()` and `increase()` handle restarts.
- *State* (each shape's minimum, maximum, current and pending counts, operations in
  flight, whether LXD answers) is read at scrape time from the store, the operation
  runner and LXD, so it can never drift from what the service holds.

Label values are the shape's project, deployment and shape names; results are a closed
set (`RESULTS`) so that a typo in core cannot grow a new series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .errors import LXDUnavailable
from .store import instances as records

if TYPE_CHECKING:
    from .core.context import Core

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "lxd_deployments"
SHAPE_LABELS = ("project", "deployment", "shape")
# How a launch or delete request ended: it went ahead, the bound refused it, LXD failed.
ACCEPTED, REFUSED, FAILED = "accepted", "refused", "failed"
RESULTS = (ACCEPTED, REFUSED, FAILED)
# Launch to running: containers start in about a second, VMs in tens of seconds.
LAUNCH_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

EVENTS = CollectorRegistry(auto_describe=True)

_launches = Counter(f"{PREFIX}_launches", "Instance launches asked of the service, by result "
                    "(accepted: a slot was reserved; refused: at scaling_maximum; failed: "
                    "LXD could not create or start it)", (*SHAPE_LABELS, "result"),
                    registry=EVENTS)
_deletes = Counter(f"{PREFIX}_deletes", "Instance deletes asked of the service, by result "
                   "(refused: at scaling_minimum)", (*SHAPE_LABELS, "result"), registry=EVENTS)
_launch_seconds = Histogram(f"{PREFIX}_launch_duration_seconds", "Seconds from the reserved "
                            "slot to the instance running in LXD", SHAPE_LABELS,
                            buckets=LAUNCH_BUCKETS, registry=EVENTS)
_webhook_attempts = Counter(f"{PREFIX}_webhook_attempts", "Webhook delivery attempts, by "
                            "result (delivered, retry: failed and tried again later, failed: "
                            "failed for good)", ("deployment", "result"), registry=EVENTS)
_webhook_seconds = Histogram(f"{PREFIX}_webhook_attempt_duration_seconds", "Seconds one "
                             "webhook delivery attempt took (request and answer)",
                             ("deployment",), buckets=WEBHOOK_BUCKETS, registry=EVENTS)
_outside_changes = Counter(f"{PREFIX}_outside_changes", "Changes made to the service's "
                           "instances outside the service (noticed in LXD events or by the "
                           "periodic reconcile), by change", ("project", "change"),
                           registry=EVENTS)


def _check(result: str) -> str:
    if result not in RESULTS:
        raise ValueError(f"unknown result {result!r}")
    return result


# --- the hooks core calls ------------------------------------------------------------------


def launch(project: str, deployment: str, shape: str, result: str, count: int = 1) -> None:
    _launches.labels(project, deployment, shape, _check(result)).inc(count)


def delete(project: str, deployment: str, shape: str, result: str, count: int = 1) -> None:
    _deletes.labels(project, deployment, shape, _check(result)).inc(count)


def launched(project: str, deployment: str, shape: str, started_at: float) -> None:
    """The instance runs: observe its latency since `started_at` (time.monotonic())."""
    _launch_seconds.labels(project, deployment, shape).observe(time.monotonic() - started_at)


def webhook_attempt(deployment: str, result: str, seconds: float) -> None:
    if result not in ("delivered", "retry", "failed"):
        raise ValueError(f"unknown webhook result {result!r}")
    _webhook_attempts.labels(deployment, result).inc()
    _webhook_seconds.labels(deployment).observe(seconds)


def outside_change(project: str, change: str) -> None:
    _outside_changes.labels(project, change).inc()


# --- state, read at scrape time ----------------------------------------------------------------


class StateCollector(Collector):
    """Gauges read from one core when scraped (never registered for auto-describe)."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def collect(self) -> Iterator[Metric]:
        families = {
            "minimum": "The shape's scaling_minimum",
            "maximum": "The shape's scaling_maximum",
            "current": "Instances the shape counts (pending, ready, failed and deleting)",
            "pending": "Instances being launched (a slot reserved, LXD creating them)",
        }
        gauges = {name: GaugeMetricFamily(f"{PREFIX}_shape_{name}", text, labels=SHAPE_LABELS)
                  for name, text in families.items()}
        with self._core.db.read() as conn:
            counts = records.shape_counts(conn)
        for row in counts:
            labels = (row.project, row.deployment, row.shape)
            gauges["minimum"].add_metric(labels, row.scaling_minimum)
            gauges["maximum"].add_metric(labels, row.scaling_maximum)
            gauges["current"].add_metric(labels, row.current)
            gauges["pending"].add_metric(labels, row.pending)
        yield from gauges.values()
        running = [op for op in self._core.operations.list() if not op.status.final]
        yield GaugeMetricFamily(f"{PREFIX}_operations_in_flight",
                                "Operations pending or running", value=len(running))
        yield GaugeMetricFamily(f"{PREFIX}_lxd_up", "1 when LXD answered the scrape's "
                                "question, 0 when it is unreachable", value=self._lxd_up())

    def _lxd_up(self) -> int:
        try:
            self._core.lxd.project_exists("default")
        except LXDUnavailable as err:
            logger.warning("metrics: LXD does not answer: %s", err)
            return 0
        return 1


def render(core: Core) -> bytes:
    """One scrape: the process' event counters and the core's state, as OpenMetrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Events())
    registry.register(StateCollector(core))
    return generate_latest(registry)


class _Events(Collector):
    """The process-wide event registry, as one collector of a scrape's registry."""

    def collect(self) -> Iterator[Metric]:
        yield from EVENTS.collect()

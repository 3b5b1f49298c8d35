"""`GET /1.0/metrics` on the real service process driving the real LXD, over HTTPS.

A fresh service (its counters start at zero) gets known launches, deletes and refusals
from a governor over mTLS; a scrape with a `metrics` certificate then shows exactly
those counts, the shape's gauges equal the store and LXD, and callers without the right
certificate are refused.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.certs import make_certificate

from .helpers import accepted, error_of, ok, ours, wait_operation


def _scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    response = client.get("/1.0/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_counters_and_gauges_equal_what_happened(own_service, lxd, lxd_project):
    service, params = own_service, {"project": lxd_project}
    ok(service.http.post("/1.0/deployments", params=params, json={"name": "web"}), 201)
    ok(service.http.post("/1.0/deployments/web/shapes", params=params, json={
        "name": "front", "scaling_minimum": 1, "scaling_maximum": 2,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
    governor, scraper = make_certificate("gov"), make_certificate("prometheus")
    ok(service.http.post("/1.0/deployments/web/keys", params=params, json={
        "name": "autoscaler", "certificate": governor.pem, "role": "rw"}), 201)
    ok(service.http.post("/1.0/certificates", json={
        "certificate": scraper.pem, "type": "metrics", "name": "prometheus"}), 201)
    base = "/1.0/deployments/web/shapes/front/instances"

    with service.https_client(governor) as gov:
        for name in ("m1", "m2"):
            final = wait_operation(gov, accepted(gov.post(base, params=params,
                                                          json={"instance_name": name})))
            assert final["status"] == "Success", final
        assert error_of(gov.post(base, params=params, json={"instance_name": "m3"}))[0] == 409
        assert error_of(gov.post(base, params=params, json={"instance_name": "m4"}))[0] == 409
        final = wait_operation(gov, accepted(gov.delete(f"{base}/m1", params=params)))
        assert final["status"] == "Success", final
        assert error_of(gov.delete(f"{base}/m2", params=params))[0] == 409  # at minimum
        assert error_of(gov.get("/1.0/metrics"))[0] == 403  # a key is no scraper

    with service.https_client(scraper) as prometheus:
        scrape = _scrape(prometheus)
        assert error_of(prometheus.get("/1.0/deployments"))[0] == 403

    labels = (("deployment", "web"), ("project", lxd_project), ("shape", "front"))

    def at(name: str, **extra: str) -> float:
        return scrape.get((name, tuple(sorted((*labels, *extra.items())))), 0.0)

    assert at("lxd_deployments_launches_total", result="accepted") == 2
    assert at("lxd_deployments_launches_total", result="refused") == 2
    assert at("lxd_deployments_launches_total", result="failed") == 0
    assert at("lxd_deployments_deletes_total", result="accepted") == 1
    assert at("lxd_deployments_deletes_total", result="refused") == 1
    assert at("lxd_deployments_launch_duration_seconds_count") == 2
    assert 0 < at("lxd_deployments_launch_duration_seconds_sum") < 120
    in_lxd = [i for i in lxd.instances(lxd_project).values()
              if ours(i, service.service_id, "web")]
    assert at("lxd_deployments_shape_current") == len(in_lxd) == 1
    assert at("lxd_deployments_shape_minimum") == 1
    assert at("lxd_deployments_shape_maximum") == 2
    assert at("lxd_deployments_shape_pending") == 0
    assert scrape[("lxd_deployments_lxd_up", ())] == 1
    assert scrape[("lxd_deployments_operations_in_flight", ())] == 0


def test_a_scrape_without_a_trusted_certificate_is_refused(own_service):
    with own_service.https_client() as anonymous:
        assert error_of(anonymous.get("/1.0/metrics"))[0] == 401
    with own_service.https_client(make_certificate("stranger")) as stranger, \
            pytest.raises(httpx.TransportError):  # the handshake is not completed
        stranger.get("/1.0/metrics")

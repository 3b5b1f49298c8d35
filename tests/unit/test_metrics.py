"""`GET /1.0/metrics`: who may scrape, and that the counters and gauges follow the facts."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from lxd_deployments.store import open_database

from .conftest import launch_instance, trust_as


def samples(response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of an OpenMetrics scrape: (name, sorted labels) -> value."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _shape(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({"project": "default", "deployment": "web", "shape": "front",
                               **labels}.items()))


def value(scrape, name: str, **labels: str) -> float:
    return scrape.get(_shape(name, **labels), 0.0)


def test_an_admin_and_a_metrics_certificate_scrape_others_are_refused(world, api, clients):
    scraper = clients(trust_as(api, "prometheus", "metrics"))

    assert world.admin.get("/1.0/metrics").status_code == 200
    assert scraper.get("/1.0/metrics").status_code == 200
    assert world.anonymous.get("/1.0/metrics").status_code == 401
    assert world.rw.get("/1.0/metrics").status_code == 403  # a deployment key


def test_a_metrics_certificate_reaches_nothing_else(world, api, clients):
    scraper = clients(trust_as(api, "prometheus", "metrics"))

    for path in ("/1.0/deployments", "/1.0/deployments/web", "/1.0/certificates",
                 "/1.0/deployments/web/shapes/front/instances", "/1.0/audit"):
        assert scraper.get(path).status_code == 403, path
    assert scraper.post("/1.0/deployments/web/shapes/front/instances",
                        json={"instance_name": "x"}).status_code == 403


def test_launches_deletes_and_refusals_are_counted_and_the_shape_gauges_follow(world, api):
    before = samples(api.get("/1.0/metrics"))
    for name in ("a1", "a2", "a3"):
        launch_instance(api, "web", "front", name)
    refused = api.post("/1.0/deployments/web/shapes/front/instances",
                       json={"instance_name": "a4"})
    assert refused.status_code == 409  # front's maximum is 3
    deleted = api.delete("/1.0/deployments/web/shapes/front/instances/a1")
    api.get(deleted.json()["operation"] + "/wait", params={"timeout": 10})

    after = samples(api.get("/1.0/metrics"))

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    assert delta("lxd_deployments_launches_total", result="accepted") == 3
    assert delta("lxd_deployments_launches_total", result="refused") == 1
    assert delta("lxd_deployments_launches_total", result="failed") == 0
    assert delta("lxd_deployments_deletes_total", result="accepted") == 1
    assert delta("lxd_deployments_launch_duration_seconds_count") == 3
    assert value(after, "lxd_deployments_shape_current") == 2
    assert value(after, "lxd_deployments_shape_maximum") == 3
    assert value(after, "lxd_deployments_shape_minimum") == 0
    assert value(after, "lxd_deployments_shape_pending") == 0
    assert after[("lxd_deployments_lxd_up", ())] == 1
    assert after[("lxd_deployments_operations_in_flight", ())] == 0


def test_a_launch_lxd_fails_is_counted_failed(world, api, fake_lxd):
    before = samples(api.get("/1.0/metrics"))
    fake_lxd.fail_create.add("b1")
    response = api.post("/1.0/deployments/web/shapes/front/instances",
                        json={"instance_name": "b1"})
    api.get(response.json()["operation"] + "/wait", params={"timeout": 10})

    after = samples(api.get("/1.0/metrics"))

    assert value(after, "lxd_deployments_launches_total", result="failed") - \
        value(before, "lxd_deployments_launches_total", result="failed") == 1
    assert value(after, "lxd_deployments_shape_current") == 0  # the slot was released


def test_migration_keeps_keys_and_certificates_and_allows_metrics(tmp_path):
    """The SQLite rebuild of `certificates` keeps every row and every key pointing at it."""
    db = open_database(tmp_path / "db.sqlite3")
    with db.write() as conn:
        conn.exec_driver_sql("INSERT INTO certificates (fingerprint, name, type, certificate,"
                             " created_at) VALUES ('m', 'scraper', 'metrics', 'pem', 'now')")
        rows = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = "
                                   "'deployments_keys'").scalar()
    assert rows == []
    assert 'REFERENCES certificates' in sql or 'REFERENCES "certificates"' in sql
    db.close()

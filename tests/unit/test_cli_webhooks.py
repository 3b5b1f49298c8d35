"""`lxd-deployments webhook ...` and `shape scale-request`: the requests they send and
what they print (the service scripted, as in test_cli.py)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from .test_cli import FakeAPI, run, sync

DELIVERY = {"id": "d-1", "event_id": "e-1", "event_type": "scale-request",
            "status": "failed", "attempts": 3, "max_attempts": 3,
            "last_error": "ConnectError: refused", "created_at": "2026-11-02T10:00:00"}


def test_deliveries_lists_with_filters_in_any_format():
    api = FakeAPI()
    api.on("GET", "/1.0/deployments/web/webhook-deliveries", sync([DELIVERY]))

    table = run(api, "webhook", "deliveries", "web", "--status", "failed", "--type",
                "scale-request", "--limit", "5")
    csv = run(api, "webhook", "ls", "web", "--format", "csv", "--project", "p1")

    assert table.code == 0 and "| d-1 | scale-request | failed | 3/3" in table.out
    query = parse_qs(api.sent("GET")[0].url.query.decode())
    assert query == {"recursion": ["1"], "status": ["failed"], "type": ["scale-request"],
                     "limit": ["5"]}
    assert csv.out == "d-1,scale-request,failed,3/3,ConnectError: refused," \
                      "2026-11-02T10:00:00\n"
    assert parse_qs(api.sent("GET")[1].url.query.decode())["project"] == ["p1"]


def test_show_redeliver_and_the_secret():
    api = FakeAPI()
    base = "/1.0/deployments/web"
    api.on("GET", f"{base}/webhook-deliveries/d-1", sync({**DELIVERY, "event": {"id": "e-1"}}))
    api.on("POST", f"{base}/webhook-deliveries/d-1/redeliver", sync({"id": "d-2"}))
    api.on("GET", f"{base}/webhook-secret", sync({"secret": "abc", "rotated_at": ""}))
    api.on("POST", f"{base}/webhook-secret", sync({"secret": "def", "rotated_at": "now"}))

    assert "event:\n  id: e-1\n" in run(api, "webhook", "show", "web", "d-1").out
    assert run(api, "webhook", "redeliver", "web", "d-1").out == \
        "Delivery d-2 queued (redelivery of d-1)\n"
    assert run(api, "webhook", "redeliver", "web", "d-1", "-q").out == ""
    assert run(api, "webhook", "secret", "show", "web").out == "secret: abc\nrotated_at: ''\n"
    assert run(api, "webhook", "secret", "rotate", "web").out == \
        "secret: def\nrotated_at: now\n"


def test_scale_request_sends_the_count_and_reason():
    api = FakeAPI()
    path = "/1.0/deployments/web/shapes/front/scale-requests"
    api.on("POST", path, sync({"id": "e-9", "type": "scale-request"}))

    result = run(api, "shape", "scale-request", "web", "front", "3", "--reason", "sale")
    bare = run(api, "shape", "scale-request", "web", "front", "2")

    assert result.out == "Scale request e-9 sent: front to 3 instance(s)\n"
    first, second = (json.loads(r.content) for r in api.sent("POST", path))
    assert (first, second) == ({"count": 3, "reason": "sale"}, {"count": 2, "reason": ""})
    assert run(api, "shape", "scale-request", "web", "front", "two").code == 2
    assert bare.code == 0

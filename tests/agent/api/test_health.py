"""Health, readiness, metrics and the world view."""

from __future__ import annotations

import re

from tests.agent.api.conftest import Api, event_body, make_pending_request

SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? '
    r"(-?[0-9.e+]+|\+Inf|NaN)$"
)


def test_health_and_readiness(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "checkpointer": "ok"}


def test_metrics_are_prometheus_text(api: Api) -> None:
    make_pending_request(api.engine)
    api.client.post("/events", json=event_body("ev-m"), headers=api.h("integration"))
    api.client.post("/events", json=event_body("ev-m"), headers=api.h("integration"))
    api.drain()
    resp = api.client.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = resp.text
    names = set()
    for line in text.strip().splitlines():
        if line.startswith("# "):
            assert line.startswith(("# HELP ", "# TYPE ")), line
            continue
        assert SAMPLE.match(line), line
        names.add(line.split("{")[0].split(" ")[0])
    assert "orderagent_events_accepted_total 1" in text
    assert "orderagent_events_duplicate_total 1" in text
    assert "orderagent_approvals_pending 1" in text
    assert 'orderagent_incidents{status="' in text
    assert 'orderagent_steps_executed{status="succeeded"} ' in text  # the stalled order's notice went out
    assert "orderagent_decision_latency_seconds_count 1" in text
    assert 'orderagent_decision_latency_seconds_bucket{le="+Inf"} 1' in text
    for expected in (
        "orderagent_steps_executed",
        "orderagent_planner_fallbacks",
        "orderagent_approval_latency_seconds_count",
    ):
        assert expected in names


def test_world_view(api: Api) -> None:
    summary = api.client.get("/world", headers=api.h("dispatcher"))
    assert summary.status_code == 200
    order = api.client.get("/world/orders/O1", headers=api.h("auditor")).json()
    assert order["order"]["id"] == "O1" and order["lines"][0]["sku_id"] == "milk-1l"
    assert api.client.get("/world/orders/nope", headers=api.h("auditor")).status_code == 404

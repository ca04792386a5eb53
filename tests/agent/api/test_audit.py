"""Audit query and chain verification over HTTP."""

from __future__ import annotations

from tests.agent.api.conftest import Api, event_body


def test_records_query_and_verify(api: Api) -> None:
    first = api.client.post("/events", json=event_body("ev-aud"), headers=api.h("integration")).json()
    api.drain()
    (incident_id,) = first["incident_ids"]
    records = api.client.get(f"/audit/records?incident_id={incident_id}", headers=api.h("auditor")).json()
    assert records and all(r["incident_id"] == incident_id for r in records)
    assert records[0]["stage"] == "intake"
    by_order = api.client.get("/audit/records?order_id=O3", headers=api.h("auditor")).json()
    assert {r["incident_id"] for r in by_order} == {incident_id}
    assert api.client.get("/audit/records?order_id=O8", headers=api.h("auditor")).json() == []
    assert api.client.get("/audit/records?since=yesterday", headers=api.h("auditor")).status_code == 422
    report = api.client.get("/audit/verify", headers=api.h("auditor")).json()
    assert report["ok"] is True and report["records"] >= len(records)

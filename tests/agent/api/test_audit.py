"""Audit query and chain verification over HTTP."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlmodel import Session, select

from audit.models import Snapshot
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


def _a_snapshot(api: Api) -> str:
    api.client.post("/events", json=event_body("ev-snap"), headers=api.h("integration"))
    api.drain()
    with Session(api.engine) as s:
        return s.exec(select(Snapshot.sha256)).first() or ""


def test_snapshot_content_by_hash(api: Api) -> None:
    sha = _a_snapshot(api)
    assert sha
    for role in ("auditor", "supervisor", "admin"):
        resp = api.client.get(f"/audit/snapshots/{sha}", headers=api.h(role))
        assert resp.status_code == 200, (role, resp.text)
        assert resp.headers["content-type"].startswith("application/json")
        assert hashlib.sha256(resp.content).hexdigest() == sha  # exactly as stored
        assert isinstance(resp.json(), dict)
    for role in ("dispatcher", "integration"):
        assert api.client.get(f"/audit/snapshots/{sha}", headers=api.h(role)).status_code == 403
    assert api.client.get(f"/audit/snapshots/{sha}").status_code == 401
    assert api.client.get(f"/audit/snapshots/{'0' * 64}", headers=api.h("auditor")).status_code == 404
    assert api.client.get("/audit/snapshots/not-a-hash", headers=api.h("auditor")).status_code == 422


def test_altered_snapshot_is_refused_and_verify_fails(api: Api) -> None:
    sha = _a_snapshot(api)
    with api.engine.begin() as conn:
        conn.execute(text("UPDATE snapshot SET content = '{}' WHERE sha256 = :h"), {"h": sha})
    resp = api.client.get(f"/audit/snapshots/{sha}", headers=api.h("auditor"))
    assert resp.status_code == 409 and "does not match" in resp.json()["detail"]
    report = api.client.get("/audit/verify", headers=api.h("auditor")).json()
    assert report["ok"] is False and sha in report["problem"]


def test_verify_reports_a_wrong_storage_type(api: Api) -> None:
    api.client.post("/events", json=event_body("ev-blob"), headers=api.h("integration"))
    api.drain()
    with api.engine.begin() as conn:
        conn.execute(text("UPDATE decisionrecord SET reason = CAST('x' AS BLOB) WHERE seq = 1"))
    resp = api.client.get("/audit/verify", headers=api.h("auditor"))
    assert resp.status_code == 200
    report = resp.json()
    assert report["ok"] is False and report["first_bad_seq"] == 1 and "modified" in report["problem"]


def test_an_approvals_evidence_says_when_its_snapshot_was_altered(api: Api) -> None:
    from sqlmodel import Session

    from agent.api.approval_views import snapshot_excerpt
    from audit.service import store_snapshot

    with Session(api.engine) as s:
        sha = store_snapshot(session=s, content={"orders": {"O1": {"status": "ready"}}})
        s.commit()
    with api.engine.begin() as conn:
        conn.execute(text("UPDATE snapshot SET content = '{}' WHERE sha256 = :h"), {"h": sha})
    with Session(api.engine) as s:
        excerpt = snapshot_excerpt(session=s, sha=sha)
    assert excerpt is not None and excerpt["sha256"] == sha and "altered" in excerpt["error"]

"""The approval queue over HTTP: evidence, per-step decisions, conflicts, edits and bulk approval."""

from __future__ import annotations

from sqlmodel import Session, select

from guardrails.models import ApprovalStep
from tests.agent.api.conftest import Api, make_pending_request


def _decide(api: Api, rid: str, body: dict, role: str = "supervisor", index: int = 0):
    return api.client.post(f"/approvals/{rid}/steps/{index}/decision", json=body, headers=api.h(role))


def test_queue_is_sorted_by_expiry_and_shows_evidence(api: Api) -> None:
    late = make_pending_request(api.engine, incident_id="inc-late0001", ttl_s=1800)
    soon = make_pending_request(api.engine, incident_id="inc-soon0001", ttl_s=300)
    queue = api.client.get("/approvals", headers=api.h("dispatcher")).json()
    assert [r["id"] for r in queue] == [soon, late]
    only = api.client.get("/approvals?incident_id=inc-late0001", headers=api.h("supervisor")).json()
    assert [r["id"] for r in only] == [late]
    detail = api.client.get(f"/approvals/{soon}", headers=api.h("supervisor")).json()
    (step,) = detail["steps"]
    assert step["tool"] == "issue_compensation" and step["args"]["amount_cents"] == 2500
    assert step["reasons"][0]["code"] == "compensation_above_auto_limit"
    assert step["confidence"] == 0.9
    assert [f["feature"] for f in step["shap_factors"]] == ["minutes_late", "tier"]
    assert detail["incident"]["id"] == "inc-soon0001"


def test_approve_then_conflicting_decisions_are_409(api_any: Api) -> None:
    api = api_any
    rid = make_pending_request(api.engine)
    ok = _decide(api, rid, {"decision": "approve"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["step_status"] == "approved"
    again = _decide(api, rid, {"decision": "reject", "reason": "changed my mind"}, role="supervisor2")
    assert again.status_code == 409
    assert api.client.get("/approvals", headers=api.h("supervisor")).json() == []


def test_unknown_ids_are_404_and_invalid_decisions_422(api: Api) -> None:
    rid = make_pending_request(api.engine)
    assert _decide(api, "no-such-request", {"decision": "approve"}).status_code == 404
    assert _decide(api, rid, {"decision": "approve"}, index=7).status_code == 404
    assert api.client.get("/approvals/no-such", headers=api.h("supervisor")).status_code == 404
    assert _decide(api, rid, {"decision": "maybe"}).status_code == 422
    assert _decide(api, rid, {"decision": "edit"}).status_code == 422  # an edit needs args
    assert _decide(api, rid, {"decision": "reject"}).status_code == 422  # a rejection needs a reason
    # an edit may not change the tool's schema: a string amount, a negative amount, an unknown field
    for args in (
        {"order_id": "O3", "kind": "credit", "amount_cents": "lots", "reason": "late"},
        {"order_id": "O3", "kind": "credit", "amount_cents": -5, "reason": "late"},
        {"order_id": "O3", "kind": "credit", "amount_cents": 500, "reason": "late", "bonus": 1},
    ):
        resp = _decide(api, rid, {"decision": "edit", "args": args})
        assert resp.status_code == 422, (args, resp.text)
    with Session(api.engine) as s:
        step = s.exec(select(ApprovalStep).where(ApprovalStep.request_id == rid)).first()
    assert step is not None and step.status == "pending"  # nothing above changed the step


def test_edit_changes_the_amount_and_counts_as_approval(api: Api) -> None:
    rid = make_pending_request(api.engine, amount_cents=2500)
    args = {"order_id": "O3", "kind": "credit", "amount_cents": 1800, "reason": "late delivery"}
    resp = _decide(api, rid, {"decision": "edit", "args": args, "reason": "a bit less"})
    assert resp.status_code == 200, resp.text
    detail = api.client.get(f"/approvals/{rid}", headers=api.h("supervisor")).json()
    (step,) = detail["steps"]
    assert step["args"]["amount_cents"] == 1800 and step["original_args"]["amount_cents"] == 2500
    assert step["edited"] is True and step["approvals"] == ["test-supervisor"]


def test_expired_request_is_409(api: Api) -> None:
    rid = make_pending_request(api.engine, ttl_s=60)
    api.clock.advance(seconds=61)
    resp = _decide(api, rid, {"decision": "approve"})
    assert resp.status_code == 409
    assert "expired" in resp.json()["detail"]


def test_bulk_approve_only_takes_low_risk_requests(api: Api) -> None:
    small = make_pending_request(api.engine, incident_id="inc-small001", amount_cents=1200)
    big = make_pending_request(api.engine, incident_id="inc-big00001", amount_cents=4000)
    two = make_pending_request(api.engine, incident_id="inc-tier2001", amount_cents=900, tier=2)
    queue = {r["id"]: r for r in api.client.get("/approvals", headers=api.h("supervisor")).json()}
    assert queue[small]["low_risk"] and not queue[big]["low_risk"] and not queue[two]["low_risk"]
    assert api.client.post("/approvals/bulk-approve", json={}, headers=api.h("dispatcher")).status_code == 403
    out = api.client.post("/approvals/bulk-approve", json={}, headers=api.h("supervisor")).json()
    assert out["approved"] == [small]
    assert set(out["skipped"]) == {big, two}
    left = [r["id"] for r in api.client.get("/approvals", headers=api.h("supervisor")).json()]
    assert sorted(left) == sorted([big, two])


def test_expiry_ticker_path_expires_requests(api: Api) -> None:
    rid = make_pending_request(api.engine, ttl_s=60)
    api.clock.advance(seconds=120)
    expired = api.app.state.worker.runtime.expire_due()
    assert rid in expired
    detail = api.client.get(f"/approvals/{rid}", headers=api.h("supervisor")).json()
    assert detail["status"] == "expired"

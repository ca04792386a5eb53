"""What the approval screens show: requests with their steps, evidence and whether they are low-risk."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from agent.models import Incident
from guardrails.models import ApprovalRequest, ApprovalStep, RequestStatus
from tools.models import aware

# Low-risk = every step needs a single approver and moves at most this much money ($15.00).
BULK_MAX_CENTS = 1500
SNAPSHOT_EXCERPT_KEYS = 12


def step_money_cents(step: ApprovalStep) -> int:
    args = step.args or {}
    if isinstance(args.get("amount_cents"), int):
        return int(args["amount_cents"])
    effect = (step.plan_step or {}).get("expected_effect") or {}
    return int(effect.get("money_cents") or 0)


def step_tier(step: ApprovalStep) -> int:
    tiers = [int(r.get("tier") or 0) for r in step.reasons or [] if isinstance(r, dict)]
    return max([step.approvals_required, *tiers]) if tiers else step.approvals_required


def low_risk(steps: list[ApprovalStep]) -> tuple[bool, str]:
    pending = [s for s in steps if s.status == "pending"]
    if not pending:
        return False, "no pending step"
    for s in pending:
        if step_tier(s) > 1:
            return False, f"step {s.step_index} ({s.tool}) needs {step_tier(s)} approvers"
        if step_money_cents(s) > BULK_MAX_CENTS:
            return False, f"step {s.step_index} ({s.tool}) moves {step_money_cents(s)} cents > {BULK_MAX_CENTS}"
    return True, ""


def _step_dict(step: ApprovalStep) -> dict[str, Any]:
    plan_step = step.plan_step or {}
    return {
        "step_index": step.step_index,
        "tool": step.tool,
        "args": step.args,
        "original_args": step.original_args,
        "rationale": plan_step.get("rationale", ""),
        "expected_effect": plan_step.get("expected_effect"),
        "reasons": step.reasons,
        "confidence": step.confidence,
        "explanation": step.explanation,
        "shap_factors": shap_factors(step.explanation),
        "approvals_required": step.approvals_required,
        "version": step.version,
        "approvals": step.approvals,
        "status": str(step.status),
        "edited": step.edited,
        "outcome": step.outcome,
        "money_cents": step_money_cents(step),
    }


def shap_factors(explanation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The explanation's top factors as {feature, label, share_pct, direction, value} (for bar charts)."""
    if not explanation:
        return []
    factors = explanation.get("top_factors") or []
    if not factors and isinstance(explanation.get("shap_values"), dict):
        values = explanation["shap_values"]
        total = sum(abs(float(v)) for v in values.values()) or 1.0
        factors = [
            {
                "feature": k,
                "label": k,
                "share_pct": round(100 * abs(float(v)) / total, 1),
                "direction": "up" if float(v) >= 0 else "down",
                "value": v,
            }
            for k, v in sorted(values.items(), key=lambda kv: -abs(float(kv[1])))[:8]
        ]
    return [f for f in factors if isinstance(f, dict)]


def _steps_of(session: Session, request_ids: list[str]) -> dict[str, list[ApprovalStep]]:
    out: dict[str, list[ApprovalStep]] = {rid: [] for rid in request_ids}
    if not request_ids:
        return out
    rows = session.exec(
        select(ApprovalStep).where(col(ApprovalStep.request_id).in_(request_ids)).order_by(col(ApprovalStep.step_index))
    )
    for s in rows:
        out[s.request_id].append(s)
    return out


def _request_dict(req: ApprovalRequest, steps: list[ApprovalStep], now: datetime | None) -> dict[str, Any]:
    ok, why = low_risk(steps) if req.status == RequestStatus.pending else (False, f"request is {req.status}")
    return {
        "id": req.id,
        "incident_id": req.incident_id,
        "thread_id": req.thread_id,
        "status": str(req.status),
        "requested_at": aware(req.requested_at).isoformat(),
        "expires_at": aware(req.expires_at).isoformat(),
        "resolved_at": aware(req.resolved_at).isoformat() if req.resolved_at else None,
        # by the service's clock: the console counts down from this, whatever the browser's clock says
        "seconds_left": max(0.0, (aware(req.expires_at) - now).total_seconds()) if now else None,
        "required_approvals": req.required_approvals,
        "confidence": req.confidence,
        "policy_version": req.policy_version,
        "escalated": req.escalated,
        "risk_reasons": req.risk_reasons,
        "low_risk": ok,
        "low_risk_reason": why,
        "steps": [_step_dict(s) for s in steps],
    }


def list_views(
    *, session: Session, status: str | None, incident_id: str | None, now: datetime | None = None, limit: int = 500
) -> list[dict]:
    stmt = select(ApprovalRequest)
    if status:
        stmt = stmt.where(ApprovalRequest.status == status)
    if incident_id:
        stmt = stmt.where(ApprovalRequest.incident_id == incident_id)
    reqs = list(session.exec(stmt.order_by(col(ApprovalRequest.expires_at), col(ApprovalRequest.id)).limit(limit)))
    steps = _steps_of(session, [r.id for r in reqs])
    return [_request_dict(r, steps[r.id], now) for r in reqs]


def detail_view(*, session: Session, request_id: str, now: datetime | None = None) -> dict[str, Any] | None:
    req = session.get(ApprovalRequest, request_id)
    if req is None:
        return None
    view = _request_dict(req, _steps_of(session, [req.id])[req.id], now)
    incident = session.get(Incident, req.incident_id)
    view["incident"] = (
        {
            "id": incident.id,
            "type": incident.type,
            "zone": incident.zone,
            "status": str(incident.status),
            "summary": incident.summary,
            "order_ids": incident.order_ids[:50],
        }
        if incident
        else None
    )
    view["snapshot_excerpt"] = snapshot_excerpt(session=session, sha=incident.snapshot_sha if incident else "")
    return view


def snapshot_excerpt(*, session: Session, sha: str) -> dict[str, Any] | None:
    """The first keys of the snapshot the agent decided on (the full one is in the audit store)."""
    if not sha:
        return None
    try:
        from audit.service import SnapshotIntegrityError, get_snapshot
    except ModuleNotFoundError:
        return None
    try:
        content = get_snapshot(session=session, sha256=sha) or {}
    except SnapshotIntegrityError:  # the supervisor sees that the facts were altered, not a 500
        return {"sha256": sha, "error": "the stored snapshot no longer matches its hash: the facts were altered"}
    excerpt: dict[str, Any] = {"sha256": sha}
    for key in list(content)[:SNAPSHOT_EXCERPT_KEYS]:
        value = content[key]
        if isinstance(value, list):
            excerpt[key] = value[:5] + ([f"... {len(value) - 5} more"] if len(value) > 5 else [])
        elif isinstance(value, dict) and len(value) > 8:
            excerpt[key] = {k: value[k] for k in list(value)[:8]} | {"...": f"{len(value) - 8} more"}
        else:
            excerpt[key] = value
    return excerpt


def request_created_at(*, session: Session, request_id: str) -> datetime | None:
    req = session.get(ApprovalRequest, request_id)
    return aware(req.requested_at) if req else None


def outcome_dict(outcome: Any) -> dict[str, Any]:
    if hasattr(outcome, "model_dump"):
        return outcome.model_dump(mode="json")
    if hasattr(outcome, "__dataclass_fields__"):
        from dataclasses import asdict

        return {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in asdict(outcome).items()}
    return dict(outcome) if isinstance(outcome, dict) else {"result": str(outcome)}

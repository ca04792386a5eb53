"""The supervisors' approval queue: list, inspect with evidence, decide per step, bulk-approve low-risk.

Low-risk (what bulk approval may decide): every pending step of the request needs one approver
(tier 1: no reason with tier >= 2) and moves at most ``BULK_MAX_CENTS`` of money (the step's
``amount_cents`` argument, else its expected money effect). Anything else needs a look per step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import ValidationError

from agent.api import approval_views as views
from agent.api.deps import AUTH_RESPONSES, MetricsDep, ReaderDep, SessionDep, SupervisorDep, WorkerDep
from agent.api.models import BulkApproveIn, BulkApproveOut, DecisionIn
from guardrails.service import Forbidden
from tools.state_machine import Conflict, DomainError, NotFound

router = APIRouter(prefix="/approvals", tags=["approvals"], responses=AUTH_RESPONSES)

BULK_MAX_CENTS = views.BULK_MAX_CENTS


@router.get("")
def list_approvals(
    session: SessionDep,
    _: ReaderDep,
    worker: WorkerDep,
    status: Literal["pending", "resolved", "expired", "all"] = Query(default="pending"),
    incident_id: str | None = Query(default=None, max_length=128),
) -> list[dict[str, Any]]:
    """Approval requests sorted by expiry (soonest first), with their steps and low-risk flag."""
    return views.list_views(
        session=session,
        status=None if status == "all" else status,
        incident_id=incident_id,
        now=worker.clock.now(),
    )


@router.get("/{request_id}")
def get_approval(request_id: str, session: SessionDep, _: ReaderDep, worker: WorkerDep) -> dict[str, Any]:
    """One request with its evidence: snapshot excerpt, risk reasons, confidence and SHAP factors per step."""
    view = views.detail_view(session=session, request_id=request_id, now=worker.clock.now())
    if view is None:
        raise HTTPException(404, detail=f"unknown approval request {request_id!r}")
    return view


@router.post(
    "/{request_id}/steps/{step_index}/decision",
    responses={404: {"description": "unknown request or step"}, 409: {"description": "decided or expired"}},
)
def decide(
    request_id: str,
    step_index: Annotated[int, Path(ge=0, le=100_000)],
    body: DecisionIn,
    session: SessionDep,
    principal: SupervisorDep,
    worker: WorkerDep,
    metrics: MetricsDep,
) -> dict[str, Any]:
    """Approve, edit (new arguments, same tool) or reject one step. The approver is the token's identity."""
    if body.decision == "edit" and not body.args:
        raise HTTPException(422, detail="an edit needs the edited args")
    created = views.request_created_at(session=session, request_id=request_id)
    if created is None:
        raise HTTPException(404, detail=f"unknown approval request {request_id!r}")
    session.close()  # the runtime uses its own sessions; do not hold a read transaction open meanwhile
    try:
        outcome = worker.decide(
            request_id=request_id,
            step_index=step_index,
            decision=body.decision,
            actor_id=principal.name,
            actor_role=principal.role.value,
            edited_args=body.args if body.decision == "edit" else None,
            reason=body.reason,
        )
    except NotFound as exc:
        raise HTTPException(404, detail=exc.message) from exc
    except Conflict as exc:
        raise HTTPException(409, detail=exc.message) from exc
    except Forbidden as exc:
        raise HTTPException(403, detail=exc.message) from exc
    except ValidationError as exc:
        raise HTTPException(422, detail=exc.errors(include_url=False, include_context=False)) from exc
    except DomainError as exc:
        raise HTTPException(422, detail=exc.message) from exc
    metrics.inc("orderagent_approval_decisions_total", decision=body.decision)
    metrics.observe("orderagent_approval_latency_seconds", max(0.0, (worker.clock.now() - created).total_seconds()))
    return views.outcome_dict(outcome)


@router.post("/bulk-approve", response_model=BulkApproveOut)
def bulk_approve(
    body: BulkApproveIn,
    session: SessionDep,
    principal: SupervisorDep,
    worker: WorkerDep,
    metrics: MetricsDep,
) -> BulkApproveOut:
    """Approve every pending step of each low-risk pending request (or of the listed ones)."""
    candidates = views.list_views(session=session, status="pending", incident_id=None)
    if body.request_ids is not None:
        wanted = set(body.request_ids)
        candidates = [c for c in candidates if c["id"] in wanted]
    approved: list[str] = []
    skipped: dict[str, str] = {}
    if body.request_ids:
        for rid in set(body.request_ids) - {c["id"] for c in candidates}:
            skipped[rid] = "not a pending request"
    session.close()
    for view in candidates:
        if not view["low_risk"]:
            skipped[view["id"]] = view["low_risk_reason"]
            continue
        try:
            for step in view["steps"]:
                if step["status"] != "pending":
                    continue
                worker.decide(
                    request_id=view["id"],
                    step_index=step["step_index"],
                    decision="approve",
                    actor_id=principal.name,
                    actor_role=principal.role.value,
                    reason=body.reason,
                    # what was judged low-risk above: an edit meanwhile makes this a conflict
                    expect_version=step["version"],
                )
                metrics.inc("orderagent_approval_decisions_total", decision="approve")
            approved.append(view["id"])
        except DomainError as exc:  # decided or expired meanwhile, or refused: report, go on
            skipped[view["id"]] = exc.message
    return BulkApproveOut(approved=approved, skipped=skipped)

"""The approval queue: store requests, record supervisors' decisions atomically, expire stale requests.

A decision applies with one conditional UPDATE (``WHERE status = 'pending' AND version = <read>``):
two supervisors deciding the same step at once cannot both win, on SQLite or PostgreSQL; the loser
gets ``Conflict``. The decider's identity and role are parameters from the authenticated caller, never
from the request body. Functions do not commit: the caller's transaction does (``session_scope``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from agent.plan import PlanStep
from guardrails.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalRequestPublic,
    ApprovalStatus,
    ApprovalStep,
    ApprovalStepPublic,
    DecisionKind,
    DecisionResult,
    RequestStatus,
)
from guardrails.policy import Policy, assess, load_policy, step_subjects
from guardrails.validation import build_assess_context, incident_money, schema_errors
from guardrails.verdict import Decision, Verdict
from tools.models import Escalation, aware
from tools.state_machine import Conflict, DomainError, NotFound

DECIDER_ROLES = frozenset({"supervisor", "admin"})


class Forbidden(DomainError):
    """The caller's role may not decide approvals."""

    code = "forbidden"


class InvalidDecision(DomainError):
    """The decision itself is malformed (reject without a reason, edit without arguments, ...)."""

    code = "invalid_decision"


class InvalidEdit(InvalidDecision):
    """An edit that changes the tool, breaks the schema, or would be blocked by the policy."""

    code = "invalid_edit"


def _utc(dt: datetime) -> datetime:
    return aware(dt).astimezone(UTC)


def _incident_scope(*, session: Session, incident_id: str, steps: list[PlanStep]) -> list[str]:
    """The incident's orders (agent.models.Incident when present), else the orders the steps name."""
    try:
        from agent.models import Incident  # type: ignore[import-not-found,unused-ignore]

        incident = session.get(Incident, incident_id)
        if incident is not None and getattr(incident, "order_ids", None):
            return list(incident.order_ids)
    except ImportError:
        pass
    out: list[str] = []
    for s in steps:
        out += [o for o in step_subjects(s.args).order_ids if o not in out]
    return out


def create_approval_request(
    *,
    session: Session,
    incident_id: str,
    thread_id: str,
    steps: list[PlanStep],
    verdicts: dict[int, Verdict],
    now: datetime,
    ttl_s: int,
    incident_order_ids: list[str] | None = None,
    explanation: dict[str, Any] | None = None,
    step_dumps: Mapping[int, dict[str, Any]] | None = None,
    verdict_dumps: Mapping[int, dict[str, Any]] | None = None,
) -> ApprovalRequest:
    """Queue the steps whose verdict is needs_approval (blocked and allowed steps are not queued).
    ``step_dumps`` / ``verdict_dumps``: ``model_dump(mode="json")`` of the steps and verdicts by step
    index, when the caller has them already (a storm's plan is dumped once, not once per consumer)."""
    queued = [s for s in steps if s.index in verdicts and verdicts[s.index].decision == Decision.needs_approval]
    if not queued:
        raise InvalidDecision("no step needs approval", incident_id=incident_id)
    now = _utc(now)
    scope = (
        incident_order_ids
        if incident_order_ids is not None
        else _incident_scope(session=session, incident_id=incident_id, steps=steps)
    )
    req = ApprovalRequest(
        id=str(uuid.uuid4()),
        incident_id=incident_id,
        thread_id=thread_id,
        requested_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        required_approvals=max(max(1, verdicts[s.index].approvals_required) for s in queued),
        confidence=min(s.confidence for s in queued),
        policy_version=verdicts[queued[0].index].policy_version,
        risk_reasons=[
            {"step_index": s.index, **r}
            for s in queued
            for r in (
                verdict_dumps[s.index]["reasons"]
                if verdict_dumps is not None
                else [r.model_dump(mode="json") for r in verdicts[s.index].reasons]
            )
        ],
        explanation=explanation or {},
        incident_order_ids=scope,
    )
    session.add(req)
    session.flush()  # the steps reference the request
    # One executemany for the step rows (a storm queues ~140): an ORM object per row cost more than
    # the rest of the request together. Every column is given, with the values the model's defaults
    # would have written, so the rows are the same as ApprovalStep(...) objects would make.
    rows = [
        {
            "request_id": req.id,
            "step_index": s.index,
            "tool": s.tool,
            "args": s.args,
            "args_hash": s.args_hash,
            "original_args": s.args,
            "plan_step": step_dumps[s.index] if step_dumps is not None else s.model_dump(mode="json"),
            "reasons": (
                verdict_dumps[s.index]["reasons"]
                if verdict_dumps is not None
                else [r.model_dump(mode="json") for r in verdicts[s.index].reasons]
            ),
            "confidence": s.confidence,
            "explanation": s.explanation,
            "approvals_required": max(1, verdicts[s.index].approvals_required),
            "status": ApprovalStatus.pending,
            "approvals": [],
            "edited": False,
            "decided_at": None,
            "outcome": "",
            "version": 0,
        }
        for s in queued
    ]
    session.execute(insert(ApprovalStep.__table__), rows)  # type: ignore[attr-defined]
    return req


def get_request(*, session: Session, request_id: str) -> ApprovalRequest:
    req = session.get(ApprovalRequest, request_id)
    if req is None:
        raise NotFound(f"unknown approval request {request_id!r}", request_id=request_id)
    return req


def list_steps(*, session: Session, request_id: str) -> list[ApprovalStep]:
    stmt = select(ApprovalStep).where(ApprovalStep.request_id == request_id).order_by(ApprovalStep.step_index)  # type: ignore[arg-type]
    return list(session.exec(stmt))


def list_requests(
    *,
    session: Session,
    status: RequestStatus | str | None = None,
    incident_id: str | None = None,
    order_by_expiry: bool = True,
) -> list[ApprovalRequest]:
    stmt = select(ApprovalRequest)
    if status is not None:
        stmt = stmt.where(ApprovalRequest.status == RequestStatus(status))
    if incident_id is not None:
        stmt = stmt.where(ApprovalRequest.incident_id == incident_id)
    order = ApprovalRequest.expires_at if order_by_expiry else ApprovalRequest.requested_at
    return list(session.exec(stmt.order_by(order, ApprovalRequest.id)))  # type: ignore[arg-type]


def is_resolved(*, session: Session, request_id: str) -> bool:
    """True once no step waits any more: every step decided, or the request expired."""
    req = get_request(session=session, request_id=request_id)
    session.refresh(req)
    return req.status != RequestStatus.pending


def approved_steps(*, session: Session, request_id: str) -> list[PlanStep]:
    """The approved steps as PlanSteps carrying the (possibly edited) arguments."""
    out = []
    for st in list_steps(session=session, request_id=request_id):
        if st.status == ApprovalStatus.approved:
            out.append(PlanStep.model_validate({**st.plan_step, "args": st.args}))
    return out


def request_public(*, session: Session, request_id: str) -> ApprovalRequestPublic:
    req = get_request(session=session, request_id=request_id)
    steps = [
        ApprovalStepPublic(
            step_index=st.step_index,
            tool=st.tool,
            args=st.args,
            original_args=st.original_args,
            rationale=str(st.plan_step.get("rationale", "")),
            reasons=st.reasons,
            confidence=st.confidence,
            explanation=st.explanation,
            approvals_required=st.approvals_required,
            approvals=st.approvals,
            status=st.status,
            edited=st.edited,
            outcome=st.outcome,
        )
        for st in list_steps(session=session, request_id=request_id)
    ]
    return ApprovalRequestPublic(
        id=req.id,
        incident_id=req.incident_id,
        thread_id=req.thread_id,
        status=req.status,
        requested_at=_utc(req.requested_at),
        expires_at=_utc(req.expires_at),
        required_approvals=req.required_approvals,
        confidence=req.confidence,
        policy_version=req.policy_version,
        escalated=req.escalated,
        risk_reasons=req.risk_reasons,
        steps=steps,
    )


def _edited_args(step: ApprovalStep, edited_args: dict[str, Any] | None) -> dict[str, Any]:
    if not edited_args:
        raise InvalidEdit("an edit needs the new arguments")
    changes = dict(edited_args)
    if "tool" in changes:
        if changes.pop("tool") != step.tool:
            raise InvalidEdit(f"an edit cannot change the tool of step {step.step_index} ({step.tool})")
        if set(changes) == {"args"} and isinstance(changes["args"], dict):
            changes = dict(changes["args"])
    # keys given replace the proposed ones; the others stay as proposed
    return {**step.args, **changes}


def _reassess_edit(
    *,
    session: Session,
    req: ApprovalRequest,
    step: ApprovalStep,
    new_args: dict[str, Any],
    now: datetime,
    policy: Policy,
) -> tuple[PlanStep, Verdict]:
    errors = schema_errors(step.tool, new_args)
    if errors:
        raise InvalidEdit("; ".join(r.message for r in errors), reasons=[r.model_dump() for r in errors])
    new_step = PlanStep.model_validate({**step.plan_step, "args": new_args})
    # money the incident paid, and what its open requests still hold (this request's other steps
    # included, pending or approved): the edited step is judged with the rest of the plan around it
    spent, committed = incident_money(
        session=session, incident_id=req.incident_id, policy=policy, exclude=(req.id, step.step_index)
    )
    ctx = build_assess_context(
        session=session,
        incident_order_ids=list(req.incident_order_ids),
        step_list=[new_step],
        now=now,
        spent_cents=spent,
        autonomy="auto",  # the supervisor is the human in the loop; the tier still applies
        committed=committed,
    )
    verdict = assess(new_step, ctx, policy)
    if verdict.decision == Decision.block:
        blocks = [r for r in verdict.reasons if r.tier == 0]
        raise InvalidEdit(
            "the edited step is blocked by policy: " + "; ".join(r.message for r in blocks),
            reasons=[r.model_dump() for r in blocks],
        )
    return new_step, verdict


def decide_step(
    *,
    session: Session,
    request_id: str,
    step_index: int,
    decision: DecisionKind | str,
    actor_id: str,
    actor_role: str,
    now: datetime,
    edited_args: dict[str, Any] | None = None,
    reason: str = "",
    policy: Policy | None = None,
    expect_version: int | None = None,
) -> DecisionResult:
    """Approve, edit (counts as this supervisor's approval) or reject one step, exactly once.
    ``expect_version``: the step's version the decider looked at; if another decision or an edit
    changed it since, this one is a conflict (a bulk approval never approves what it did not see)."""
    if actor_role not in DECIDER_ROLES:
        raise Forbidden(f"role {actor_role!r} may not decide approvals", actor_id=actor_id)
    if not actor_id:
        raise Forbidden("an authenticated approver is required")
    try:
        kind = DecisionKind(decision)
    except ValueError:
        raise InvalidDecision(f"unknown decision {decision!r}") from None
    now = _utc(now)
    req = get_request(session=session, request_id=request_id)
    if req.status == RequestStatus.expired or now >= _utc(req.expires_at):
        raise Conflict(f"approval request {request_id} expired at {_utc(req.expires_at).isoformat()}")
    if req.status != RequestStatus.pending:
        raise Conflict(f"approval request {request_id} is already {req.status}")
    step = session.exec(
        select(ApprovalStep).where(ApprovalStep.request_id == request_id, ApprovalStep.step_index == step_index)
    ).first()
    if step is None:
        raise NotFound(f"request {request_id} has no step {step_index}", step_index=step_index)
    session.refresh(step)  # decide on what the database holds now, not on a cached row
    if step.status != ApprovalStatus.pending:
        raise Conflict(f"step {step_index} is already {step.status}")
    if actor_id in step.approvals:
        raise Conflict(f"{actor_id} already approved step {step_index}: a second approver must be someone else")

    read_version = step.version
    if expect_version is not None and read_version != expect_version:
        raise Conflict(f"step {step_index} changed since it was read (decided or edited meanwhile): look again")
    args, approvals, required, edited = dict(step.args), list(step.approvals), step.approvals_required, step.edited
    reasons: list[dict[str, Any]] = list(step.reasons)
    if kind == DecisionKind.reject:
        if not reason.strip():
            raise InvalidDecision("a rejection needs a reason")
        status = ApprovalStatus.rejected
    else:
        if kind == DecisionKind.edit:
            new_args = _edited_args(step, edited_args)
            _, verdict = _reassess_edit(
                session=session, req=req, step=step, new_args=new_args, now=now, policy=policy or load_policy()
            )
            # earlier approvals were for other arguments: the edit starts the count again. An edit
            # never lowers the tier: the step was proposed with reasons only its whole plan shows
            # (six cancellations, the budget of steps still pending), and a re-check of the step
            # alone would not see them; those reasons stay too
            args, approvals, edited = new_args, [], True
            required = max(1, step.approvals_required, verdict.approvals_required)
            new_reasons = [r.model_dump(mode="json") for r in verdict.reasons]
            codes = {r["code"] for r in new_reasons}
            reasons = new_reasons + [r for r in reasons if r.get("code") not in codes]
        approvals.append(actor_id)
        status = ApprovalStatus.approved if len(approvals) >= required else ApprovalStatus.pending

    values: dict[str, Any] = {
        "status": status,
        "approvals": approvals,
        "approvals_required": required,
        "version": read_version + 1,
        "outcome": status.value if status != ApprovalStatus.pending else "",
    }
    if status != ApprovalStatus.pending:
        values["decided_at"] = now
    if kind == DecisionKind.edit:
        values.update(args=args, args_hash=PlanStep.model_validate({**step.plan_step, "args": args}).args_hash)
        values.update(edited=edited, reasons=reasons)
    result = session.execute(
        update(ApprovalStep)
        .where(
            ApprovalStep.id == step.id,  # type: ignore[arg-type]
            ApprovalStep.status == ApprovalStatus.pending,  # type: ignore[arg-type]
            ApprovalStep.version == read_version,  # type: ignore[arg-type]
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"step {step_index} was decided concurrently; reload and try again")
    try:
        session.add(
            ApprovalDecision(
                request_id=request_id,
                step_index=step_index,
                decision=kind,
                edited_args=args if kind == DecisionKind.edit else None,
                reason=reason,
                actor_id=actor_id,
                actor_role=actor_role,
                decided_at=now,
            )
        )
        session.flush()
    except IntegrityError as exc:  # the caller's transaction must roll back (session_scope does)
        raise Conflict(f"{actor_id} already decided step {step_index}") from exc
    session.refresh(step)

    pending_left = session.exec(
        select(func.count())
        .select_from(ApprovalStep)
        .where(ApprovalStep.request_id == request_id, ApprovalStep.status == ApprovalStatus.pending)  # type: ignore[arg-type]
    ).one()
    if pending_left == 0:
        session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request_id, ApprovalRequest.status == RequestStatus.pending)  # type: ignore[arg-type]
            .values(status=RequestStatus.resolved, resolved_at=now, version=ApprovalRequest.version + 1)
            .execution_options(synchronize_session=False)
        )
    session.refresh(req)
    return DecisionResult(
        request_id=request_id,
        step_index=step_index,
        decision=kind,
        step_status=ApprovalStatus(step.status),
        approvals=list(step.approvals),
        approvals_required=step.approvals_required,
        args=dict(step.args),
        edited=step.edited,
        request_status=RequestStatus(req.status),
        request_resolved=req.status != RequestStatus.pending,
        reasons=reasons,
    )


TEAMS = frozenset({"ops", "support", "store", "fleet", "safety"})


def expire_due(*, session: Session, now: datetime, policy: Policy | None = None) -> list[ApprovalRequest]:
    """Close requests whose window has passed: each pending step gets its tool's safe default
    (``on_expiry``: compensation not issued, reassignment stale, cancellation not done).

    Escalations follow the policy data: the expired steps whose tool has ``escalate_on_expiry``
    (money, cancellations) are handed to ops in one escalation naming their orders; an expired
    ``escalate_incident`` step ("escalated_anyway") creates its own escalation, to its own team with
    its own reason. With ``escalation_allowed`` false, nothing is escalated. The request's
    ``escalated`` says whether anything was; what each step became and each escalation are in
    ``expiry_summary``."""
    policy = policy or load_policy()
    now = _utc(now)
    due = session.exec(
        select(ApprovalRequest)
        .where(ApprovalRequest.status == RequestStatus.pending, ApprovalRequest.expires_at <= now)  # type: ignore[arg-type,operator]
        .order_by(ApprovalRequest.expires_at)  # type: ignore[arg-type]
    ).all()
    expired: list[ApprovalRequest] = []
    for req in due:
        won = session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == req.id, ApprovalRequest.status == RequestStatus.pending)  # type: ignore[arg-type]
            .values(status=RequestStatus.expired, resolved_at=now, version=ApprovalRequest.version + 1)
            .execution_options(synchronize_session=False)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            continue  # resolved or expired by someone else meanwhile
        ops_orders: list[str] = []
        own: list[tuple[ApprovalStep, list[str]]] = []  # expired escalate_incident steps
        for st in list_steps(session=session, request_id=req.id):
            if st.status != ApprovalStatus.pending:
                continue
            rule = policy.tool_rule(st.tool)
            order_ids = step_subjects(st.args).order_ids
            if st.tool == "escalate_incident":
                own.append((st, order_ids))
            elif rule is not None and rule.escalate_on_expiry:
                ops_orders += [o for o in order_ids if o not in ops_orders]
            session.execute(
                update(ApprovalStep)
                .where(ApprovalStep.id == st.id, ApprovalStep.status == ApprovalStatus.pending)  # type: ignore[arg-type]
                .values(
                    status=ApprovalStatus.expired,
                    outcome=rule.on_expiry if rule else "skipped",
                    decided_at=now,
                    version=ApprovalStep.version + 1,
                )
                .execution_options(synchronize_session=False)
            )
        wanted: list[Escalation] = []
        if policy.escalation_allowed:
            if ops_orders:
                wanted.append(
                    Escalation(
                        incident_id=req.incident_id,
                        order_ids=ops_orders,
                        reason=f"approval request {req.id} expired without a decision; safe defaults applied",
                        team="ops",
                        idempotency_key=f"approval-expired:{req.id}",
                        created_at=now,
                    )
                )
            for st, order_ids in own:
                team = st.args.get("team") if st.args.get("team") in TEAMS else "ops"
                reason = str(st.args.get("reason") or "escalation proposed by the agent")[:1000]
                wanted.append(
                    Escalation(
                        incident_id=req.incident_id,
                        order_ids=order_ids,
                        reason=f"{reason} (the approval expired: escalated anyway)",
                        team=str(team),
                        idempotency_key=f"approval-expired:{req.id}:{st.step_index}",
                        created_at=now,
                    )
                )
        for esc in wanted:
            if (
                session.exec(select(Escalation).where(Escalation.idempotency_key == esc.idempotency_key)).first()
                is None
            ):
                session.add(esc)
        if wanted:
            session.execute(
                update(ApprovalRequest)
                .where(ApprovalRequest.id == req.id)  # type: ignore[arg-type]
                .values(escalated=True)
                .execution_options(synchronize_session=False)
            )
        session.flush()
        session.refresh(req)
        for st in list_steps(session=session, request_id=req.id):
            session.refresh(st)
        expired.append(req)
    return expired


def expiry_escalations(*, session: Session, request_id: str) -> list[Escalation]:
    """The escalations the expiry of this request created (see ``expire_due``)."""
    key = f"approval-expired:{request_id}"
    return list(
        session.exec(
            select(Escalation)
            .where((Escalation.idempotency_key == key) | (Escalation.idempotency_key.startswith(key + ":")))  # type: ignore[union-attr]
            .order_by(Escalation.id)  # type: ignore[arg-type]
        )
    )


def expiry_summary(*, session: Session, request_id: str) -> dict[str, Any]:
    """What the expiry of a request did, for its audit record: each expired step's safe default and
    each escalation it created."""
    return {
        "expired_steps": [
            {"index": st.step_index, "tool": st.tool, "outcome": st.outcome}
            for st in list_steps(session=session, request_id=request_id)
            if st.status == ApprovalStatus.expired
        ],
        "escalations": [
            {"id": e.id, "team": e.team, "order_ids": list(e.order_ids or [])}
            for e in expiry_escalations(session=session, request_id=request_id)
        ],
    }

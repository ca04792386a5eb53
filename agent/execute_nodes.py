"""The graph's execution nodes: ``execute_allowed`` runs the steps the policy allowed (before any
approval wait), ``execute_approved`` the steps supervisors approved, with their edits; both run each
step exactly once through agent.execute.run_step, re-checked against the live world right before."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from sqlmodel import Session

from agent.execute import StepOutcome, idempotency_key, run_step
from agent.lease import LeaseLost
from agent.plan import Plan, PlanStep, StepStatus
from agent.reads import Ctx, clock_now, incident_row, node_session, thread_plan
from agent.records import record
from agent.state import IncidentState
from tools.orders.eta import ETA_CACHE, PredictionCache

log = structlog.get_logger(__name__)

# risks whose steps neither move orders nor riders nor stock (see _run_steps)
SHARED_CHECK_RISKS = frozenset({"notify", "money", "escalate", "read"})


def _check_at(
    live: Callable[[Session, PlanStep, datetime], list[Any]], now: datetime, session: Session, st: PlanStep
) -> list[Any]:
    return live(session, st, now)


def _run_steps(
    runtime: Ctx,
    state: IncidentState,
    plan: Plan,
    steps: list[tuple[PlanStep, list[str]]],
    stage_note: str,
) -> dict[str, Any]:
    """Run steps in order (each under its key); stop after a failure whose step says not to continue."""
    from guardrails.policy import hard_blocks, load_policy, step_subjects
    from guardrails.validation import build_assess_context, schema_errors, validate_live

    rc = runtime.context
    halted = bool(state.get("halted"))
    status: dict[str, str] = {}
    results: dict[str, Any] = {}
    with Session(rc.engine) as s:
        inc = incident_row(s, state["incident_id"])
        scope = list(inc.order_ids)
    policy = rc.policy or load_policy(rc.settings.policy_file)
    # Steps that cannot change what later checks look at (notices, money, escalations) share one
    # batch of live facts, rebuilt after any step that moves orders, riders or stock; those are
    # re-checked one by one (validate_live) right before they run.
    shared: list[Any] = []
    # the same rule for the tools' whole-world ETA (delay notices): computed once, dropped around any
    # step that can move what it reads
    eta_cache = PredictionCache()
    extras: dict[str, Any] = {ETA_CACHE: eta_cache}

    def moves_world(st: PlanStep) -> bool:
        rule = policy.tool_rule(st.tool)
        return rule is None or rule.risk not in SHARED_CHECK_RISKS

    def live(session: Session, st: PlanStep, now: datetime) -> list[Any]:
        rule = policy.tool_rule(st.tool)
        if rule is None or rule.risk not in SHARED_CHECK_RISKS:
            shared.clear()
            eta_cache.clear()
            return validate_live(session=session, step=st, incident_order_ids=scope, now=now, policy=policy)
        bad = schema_errors(st.tool, st.args)
        if bad:
            return bad
        if not shared:
            shared.append(
                build_assess_context(
                    session=session,
                    incident_order_ids=scope,
                    step_list=[s for s, _ in steps],
                    now=now,
                    with_customer_values=False,
                )
            )
        return hard_blocks(st, rule, step_subjects(st.args), shared[0], policy)

    before = state.get("step_status", {})
    for step, approvers in steps:
        if halted:
            status[str(step.index)] = StepStatus.skipped.value
            continue
        if step.after is not None and status.get(str(step.after), before.get(str(step.after))) != "executed":
            status[str(step.index)] = StepStatus.skipped.value  # what it follows did not happen
            continue
        tool = rc.tools.get(step.tool)
        if tool is None:  # assessed as blocked already; defensive for edited plans
            status[str(step.index)] = StepStatus.blocked.value
            continue
        now = clock_now(runtime)

        try:
            outcome: StepOutcome = run_step(
                engine=rc.engine,
                tool=tool,
                step=step,
                incident_id=inc.id,
                now=now,
                live_check=partial(_check_at, live, now),
                actor="agent" if not approvers else "agent+" + ",".join(approvers),
                approved_by=approvers,
                after_commit=rc.after_commit,
                extras=extras,
                fence=rc.fence,
            )
        except LeaseLost:
            raise  # another process runs this incident now: this one writes nothing more
        except Exception as exc:
            # the step's transaction rolled back (no effect, no key): it failed, and says so in the
            # incident and the execution record like any failure; the steps already run stay recorded
            log.exception("step_crashed", incident_id=inc.id, step=step.index, tool=step.tool)
            outcome = StepOutcome(
                StepStatus.failed, idempotency_key(inc.id, step), error=f"unexpected_error: {type(exc).__name__}"
            )
        if moves_world(step):
            eta_cache.clear()
        status[str(step.index)] = outcome.status.value
        results[str(step.index)] = outcome.summary()
        if outcome.status == StepStatus.failed and not step.continue_on_failure:
            halted = True
    with node_session(runtime) as s:
        inc = incident_row(s, state["incident_id"])
        inc.step_status = {**inc.step_status, **status}
        inc.updated_at = clock_now(runtime)
        s.add(inc)
        if steps:
            record(
                session=s,
                stage="execution",
                incident=inc,
                plan=plan,
                reason=stage_note,
                result={"steps": results, "status": status, "halted": halted},
            )
    return {"step_status": status, "results": results, "halted": halted}


def execute_allowed(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    with Session(runtime.context.engine) as s:
        plan = thread_plan(state, incident_row(s, state["incident_id"]), runtime)
    status = state.get("step_status", {})
    if state.get("autonomy") == "shadow":
        with node_session(runtime) as s:
            inc = incident_row(s, state["incident_id"])
            would = [
                st.model_dump(mode="json")
                for st in plan.steps
                if status.get(str(st.index)) == StepStatus.shadowed.value
            ]
            record(
                session=s,
                stage="execution",
                incident=inc,
                plan=plan,
                reason="shadow autonomy",
                result={"executed": [], "would_have_run": would},
            )
        return {}
    by_index = {st.index: st for st in plan.steps}
    todo: list[tuple[PlanStep, list[str]]] = [
        (st, [])
        for st in plan.steps
        if status.get(str(st.index)) == StepStatus.approved.value and not _follows_pending(st, status, by_index)
    ]
    return _run_steps(runtime, state, plan, todo, "allowed by policy")


def _follows_pending(step: PlanStep, status: dict[str, str], by_index: dict[int, PlanStep]) -> bool:
    """An allowed step that follows (``after``, at any depth of the chain) one waiting for approval
    runs after it, in execute_approved."""
    seen: set[int] = set()
    while step.after is not None and step.after not in seen:
        seen.add(step.after)
        if status.get(str(step.after)) == StepStatus.pending_approval.value:
            return True
        before = by_index.get(step.after)
        if before is None:
            return False
        step = before
    return False


def _closed_orders(engine: Any, step: PlanStep) -> list[str]:
    from guardrails.policy import step_subjects
    from tools.models import Order
    from tools.state_machine import TERMINAL

    with Session(engine) as s:
        ids = step_subjects(step.args).order_ids
        return [oid for oid in ids if (o := s.get(Order, oid)) is not None and o.status in TERMINAL]


def execute_approved(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    """Run what supervisors approved (with their edits); the rest gets its safe default (not run)."""
    from sqlmodel import select

    from guardrails.models import ApprovalDecision, ApprovalStep
    from guardrails.service import approved_steps

    rc = runtime.context
    rid = state["request_id"]
    assert rid is not None
    with Session(rc.engine) as s:
        plan = thread_plan(state, incident_row(s, state["incident_id"]), runtime)
        approved = {st.index: st for st in approved_steps(session=s, request_id=rid)}
        rows = {r.step_index: r for r in s.exec(select(ApprovalStep).where(ApprovalStep.request_id == rid))}
        decisions = list(s.exec(select(ApprovalDecision).where(ApprovalDecision.request_id == rid)))
    todo: list[tuple[PlanStep, list[str]]] = []
    status: dict[str, str] = {}
    for idx, row in sorted(rows.items()):
        step = approved.get(idx)
        # the step's final approvers: an edit restarts the count, so approvals given to the
        # arguments before it are not approvals of what runs
        approvers = [
            d
            for d in decisions
            if d.step_index == idx and d.decision in ("approve", "edit") and d.actor_id in row.approvals
        ]
        if step is None:
            status[str(idx)] = {"rejected": StepStatus.rejected, "expired": StepStatus.expired}.get(
                str(row.status.value if hasattr(row.status, "value") else row.status), StepStatus.rejected
            ).value
            continue
        # the approver's role is checked again here, where the action runs, not only at the API
        if not approvers or any(d.actor_role not in rc.approver_roles for d in approvers):
            status[str(idx)] = StepStatus.rejected.value
            continue
        closed = _closed_orders(rc.engine, step)
        if closed:
            # the world moved on while the step waited: an order it acts on was closed meanwhile
            # (delivered, cancelled, failed), so the approved step is stale and is not run blindly
            status[str(idx)] = StepStatus.stale.value
            continue
        todo.append((step, sorted({d.actor_id for d in approvers})))
    # allowed steps held back until the step they follow was decided (see _follows_pending)
    going = {st.index for st, _ in todo}
    was = state.get("step_status", {})
    by_index = {st.index: st for st in plan.steps}
    for st in plan.steps:  # in plan order: a chain's earlier links are decided before its later ones
        held = was.get(str(st.index)) == StepStatus.approved.value and _follows_pending(st, was, by_index)
        if held and st.index not in rows:
            if st.after in going:
                todo.append((st, []))
                going.add(st.index)
            else:
                status[str(st.index)] = StepStatus.skipped.value
    todo.sort(key=lambda t: t[0].index)
    out = _run_steps(runtime, state, plan, todo, f"approved in request {rid}")
    out["step_status"] = {**status, **out["step_status"]}
    if status:
        with node_session(runtime) as s:
            inc = incident_row(s, state["incident_id"])
            inc.step_status = {**inc.step_status, **status}
            s.add(inc)
            # what did not run, and why (rejected, expired, stale, skipped behind one of those), in
            # the audit beside what did: an auditor sees every step of the request end
            record(
                session=s,
                stage="execution",
                incident=inc,
                plan=plan,
                reason=f"not run after request {rid}",
                result={"not_run": status},
            )
    return out

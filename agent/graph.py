"""The incident graph: intake -> investigate -> plan -> assess -> execute_allowed -> approve ->
execute_approved -> report. One thread per incident (thread_id = incident id).

Every node opens its own transaction and commits before returning, and the graph runs with
durability="sync", so a checkpoint is on disk before the next node starts. A node can therefore be
re-run after a crash (between its commit and its checkpoint): each one is idempotent (the approval
request is looked up before it is created; write steps run under idempotency keys).

``approve`` only interrupts: no side effects, because a resumed node runs again from its first line.
The resume value is not trusted; ``execute_approved`` reads the decisions from the database and checks
each approver's role again where the action executes.

Allowed steps run before the approval wait (``execute_allowed``), so a storm's reassignments and
small coupons go out while a supervisor looks at the refunds; only steps needing approval wait.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, Literal

import orjson
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from sqlmodel import Session

from agent.context import RunContext
from agent.execute import StepOutcome, run_step
from agent.investigate import expand_scope, investigate
from agent.models import WITHOUT_PLAN, Incident, IncidentStatus
from agent.plan import Plan, PlanStep, StepStatus
from agent.planners.base import IncidentBrief, PlanContext
from agent.records import load_snapshot, record
from agent.state import IncidentState
from tools.base import ToolContext
from tools.db import session_scope
from tools.orders.eta import ETA_CACHE, PredictionCache

Ctx = Runtime[RunContext]
# risks whose steps neither move orders nor riders nor stock (see _run_steps)
SHARED_CHECK_RISKS = frozenset({"notify", "money", "escalate", "read"})


def _incident(session: Session, incident_id: str) -> Incident:
    inc = session.get(Incident, incident_id, options=WITHOUT_PLAN)
    if inc is None:
        raise LookupError(f"incident {incident_id} does not exist")
    return inc


def _now(rt: Ctx) -> datetime:
    return rt.context.clock.now()


def plan_digest(plan: dict[str, Any]) -> str:
    """sha256 of the dumped plan as canonical JSON: what the state keeps instead of the plan."""
    return hashlib.sha256(orjson.dumps(plan, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


class PlanChanged(RuntimeError):
    """The incident row holds another plan than the one this thread proposed (never expected: a thread
    reads its plan back only while it is the incident's current thread)."""


def _plan(state: IncidentState, inc: Incident, rt: Ctx | None = None) -> Plan:
    """This thread's plan. The plan lives in the Incident row (persisted by ``plan``); the state keeps
    only its digest, so a checkpoint per node stays small instead of carrying ~300 KB for a storm's plan.
    Checkpoints written before that change still carry the plan itself, and it is used as it is.
    Within the run that proposed it, the plan comes from the run's handoff (no re-validation)."""
    legacy = state.get("plan")
    if legacy:
        return Plan.model_validate(legacy)
    sha = state.get("plan_sha")
    changed = PlanChanged(f"incident {inc.id} no longer holds the plan of thread {state['incident_id']}")
    if rt is not None and (handed := rt.context.handoff.get(f"plan:{sha}")) is not None:
        # another process may have planned the incident meanwhile (a follow-up): the row says so
        if inc.plan_sha != sha:
            raise changed
        return handed[0]  # type: ignore[no-any-return]
    stored = inc.plan or {}
    if plan_digest(stored) != sha:
        raise changed
    return Plan.model_validate(stored)


def _plan_dump(state: IncidentState, rt: Ctx, plan: Plan) -> dict[str, Any]:
    """``plan.model_dump(mode="json")``, what approval rows and audit records store of its steps: made
    once by ``plan`` and handed over within the run, made again on a resumed run."""
    handed = rt.context.handoff.get(f"plan:{state.get('plan_sha')}")
    return handed[1] if handed is not None else plan.model_dump(mode="json")  # type: ignore[no-any-return]


def brief_of(
    session: Session, inc: Incident, focus: list[str] | None = None, handoff: dict[str, Any] | None = None
) -> IncidentBrief:
    """The incident as a planner sees it; a follow-up thread (late events) sees only its ``focus`` orders.
    The events' payloads are read once per run (``handoff``) for as long as no event joins."""
    from agent.incidents import incident_payloads

    key = f"payloads:{inc.id}:{inc.event_count}"
    payloads = handoff.get(key) if handoff is not None else None
    if payloads is None:
        payloads = incident_payloads(session=session, incident_id=inc.id)
        if handoff is not None:
            handoff[key] = payloads
    wanted = set(focus or ())
    return IncidentBrief(
        id=inc.id,
        type=inc.type,
        family=inc.family,
        zone=inc.zone,
        order_ids=[o for o in inc.order_ids if o in wanted] if focus else list(inc.order_ids),
        follow_up=bool(focus),
        rider_ids=list(inc.rider_ids),
        store_ids=list(inc.store_ids),
        customer_ids=list(inc.customer_ids),
        payloads=payloads,
        opened_at=inc.opened_at,
    )


def read_caller(rt: Ctx, session: Session, incident_id: str, log: list[dict[str, Any]] | None = None):
    """A function running READ tools only; write tools are refused (a planner can't act by reading)."""
    tools = rt.context.tools
    tctx = ToolContext(session=session, now=_now(rt), actor="agent", incident_id=incident_id)

    def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
        tool = tools.get(name)
        if tool is None:
            return {"ok": False, "error": "unknown_tool", "message": f"no tool named {name!r}"}
        if tool.writes:
            return {"ok": False, "error": "write_tool_refused", "message": f"{name} writes: not callable here"}
        out = tool.invoke(tctx, args)
        if log is not None:
            log.append({"tool": name, "args": args, "result": out})
        return out

    return call


# --- nodes -----------------------------------------------------------------------------------------


def intake(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    rc = runtime.context
    with session_scope(rc.engine) as s:
        inc = _incident(s, state["incident_id"])
        autonomy = rc.settings.autonomy_for(inc.type)
        inc.status, inc.autonomy, inc.planner, inc.updated_at = (
            IncidentStatus.investigating,
            autonomy,
            rc.planner.name,
            _now(runtime),
        )
        s.add(inc)
        record(
            session=s,
            stage="intake",
            incident=inc,
            planner=rc.planner.name,
            result={
                "type": inc.type,
                "family": inc.family,
                "zone": inc.zone,
                "events": inc.event_count,
                "autonomy": autonomy,
            },
        )
    return {"autonomy": autonomy, "request_id": None, "halted": False, "error": None}


def investigate_node(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    from audit.service import store_snapshot

    rc = runtime.context
    with session_scope(rc.engine) as s:
        inc = _incident(s, state["incident_id"])
        brief = brief_of(s, inc, state.get("focus_order_ids"), rc.handoff)
        snapshot = investigate(brief, read_caller(runtime, s, inc.id), now=_now(runtime))
        # orders the investigation found at risk in the incident's area join its scope
        scope = expand_scope(inc, snapshot)
        if scope != list(inc.order_ids):
            inc.order_ids = scope
        sha = store_snapshot(session=s, content=snapshot)
        inc.snapshot_sha = sha
        s.add(inc)
        record(
            session=s,
            stage="investigation",
            incident=inc,
            planner=rc.planner.name,
            result={"snapshot_sha": sha, "calls": snapshot.get("calls", [])},
        )
    return {"snapshot_sha": sha}


def plan_node(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    rc = runtime.context
    with session_scope(rc.engine) as s:
        inc = _incident(s, state["incident_id"])
        # the snapshot as stored (canonical key order), never the investigation's in-memory dict: a
        # planner must plan from exactly the facts the audit keeps
        snapshot = load_snapshot(session=s, sha=state["snapshot_sha"]) or {}
        gathered: list[dict[str, Any]] = []
        pctx = PlanContext(
            now=_now(runtime),
            settings=rc.settings,
            read_tool=read_caller(runtime, s, inc.id, gathered),
            autonomy=state.get("autonomy", "auto"),
            tool_names={n: t.writes for n, t in rc.tools.items()},
            gathered=gathered,
        )
        plan = rc.planner.plan(brief_of(s, inc, state.get("focus_order_ids"), rc.handoff), snapshot, pctx)
        dumped = plan.model_dump(mode="json")
        sha = plan_digest(dumped)
        inc.plan = dumped
        inc.plan_sha = sha
        inc.planner = plan.planner
        inc.summary = plan.summary
        inc.step_status = {str(st.index): StepStatus.proposed.value for st in plan.steps}
        s.add(inc)
        if plan.fallback_reason:
            record(session=s, stage="fallback", incident=inc, plan=plan, reason=plan.fallback_reason)
        record(
            session=s,
            stage="proposal",
            incident=inc,
            plan=plan,
            steps=dumped["steps"],  # each step as st.model_dump(mode="json"), dumped once with the plan
            explanation=_explanations(plan),
            attributes={"llm_tool_calls": len(gathered)} if gathered else None,
        )
    rc.handoff[f"plan:{sha}"] = (plan, dumped)
    return {"plan_sha": sha, "step_status": dict(inc.step_status)}


def _explanations(plan: Plan) -> dict[str, Any] | None:
    out = {str(s.index): s.explanation for s in plan.steps if s.explanation}
    return out or None


def assess_node(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    """Assess every step (validation + policy); queue the needs-approval ones as ONE request."""
    from guardrails.policy import assess_plan, load_policy, step_subjects
    from guardrails.service import create_approval_request, list_requests
    from guardrails.validation import build_assess_context, schema_errors, valued_orders
    from guardrails.verdict import Decision, Verdict

    rc = runtime.context
    policy = rc.policy or load_policy(rc.settings.policy_file)
    autonomy = state.get("autonomy", "auto")
    now = _now(runtime)
    with session_scope(rc.engine) as s:
        inc = _incident(s, state["incident_id"])
        plan = _plan(state, inc, runtime)
        # what each step names, read once from its arguments for the facts and the verdicts
        subjects = {st.index: step_subjects(st.args) for st in plan.steps}
        # one batch of facts for the whole plan (the same checks validate_live makes per step)
        actx = build_assess_context(
            session=s,
            incident_order_ids=list(inc.order_ids),
            step_list=plan.steps,
            now=now,
            spent_cents=0,
            autonomy=autonomy,  # type: ignore[arg-type]
            subjects=subjects,
            valued_order_ids=valued_orders(plan.steps, subjects, policy),
        )
        verdicts: dict[int, Verdict] = assess_plan(plan.steps, actx, policy, subjects)
        for step in plan.steps:
            bad = schema_errors(step.tool, step.args)
            if bad:
                verdicts[step.index] = Verdict(decision=Decision.block, reasons=bad, policy_version=policy.version)
        status: dict[str, str] = {}
        for step in plan.steps:
            v = verdicts[step.index]
            if v.decision == Decision.block:
                status[str(step.index)] = StepStatus.blocked.value
            elif autonomy == "shadow":
                status[str(step.index)] = StepStatus.shadowed.value
            elif v.decision == Decision.needs_approval:
                status[str(step.index)] = StepStatus.pending_approval.value
            else:
                status[str(step.index)] = StepStatus.approved.value
        asking = [st for st in plan.steps if status[str(st.index)] == StepStatus.pending_approval.value]
        dumped = {str(i): v.model_dump(mode="json") for i, v in verdicts.items()}
        step_dumps = {d["index"]: d for d in _plan_dump(state, runtime, plan).get("steps", [])}
        request_id = None
        if asking:
            # idempotent: a re-run of this node after a crash finds the request it already made
            existing = [
                r
                for r in list_requests(session=s, incident_id=inc.id, order_by_expiry=False)
                if r.thread_id in (None, "", inc.thread_id)  # a follow-up thread makes its own request
            ]
            if existing:
                request_id = existing[0].id
            else:
                req = create_approval_request(
                    session=s,
                    incident_id=inc.id,
                    thread_id=inc.thread_id,
                    steps=asking,
                    verdicts={st.index: verdicts[st.index] for st in asking},
                    now=now,
                    ttl_s=rc.settings.approval_ttl_s,
                    incident_order_ids=list(inc.order_ids),
                    step_dumps=step_dumps,
                    verdict_dumps={st.index: dumped[str(st.index)] for st in asking},
                )
                request_id = req.id
        inc.verdicts = dumped
        inc.step_status = {**inc.step_status, **status}
        inc.request_id = request_id
        inc.status = IncidentStatus.executing
        inc.updated_at = now
        s.add(inc)
        record(
            session=s,
            stage="verdict",
            incident=inc,
            plan=plan,
            policy_version=policy.version,
            verdicts=dumped,
            result={"autonomy": autonomy, "counts": _count(status)},
        )
        if request_id:
            record(
                session=s,
                stage="approval_request",
                incident=inc,
                plan=plan,
                policy_version=policy.version,
                steps=[step_dumps[st.index] for st in asking],
                result={"request_id": request_id, "steps": [st.index for st in asking]},
            )
    if rc.on_assessed is not None:
        rc.on_assessed()
    # the verdicts are in the Incident row and the verdict record; the state (checkpointed after every
    # node) keeps the statuses only
    return {"step_status": status, "request_id": request_id}


def _count(status: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in status.values():
        out[v] = out.get(v, 0) + 1
    return out


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
        inc = _incident(s, state["incident_id"])
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
        now = _now(runtime)

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
        )
        if moves_world(step):
            eta_cache.clear()
        status[str(step.index)] = outcome.status.value
        results[str(step.index)] = outcome.summary()
        if outcome.status == StepStatus.failed and not step.continue_on_failure:
            halted = True
    with session_scope(rc.engine) as s:
        inc = _incident(s, state["incident_id"])
        inc.step_status = {**inc.step_status, **status}
        inc.updated_at = _now(runtime)
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
        plan = _plan(state, _incident(s, state["incident_id"]), runtime)
    status = state.get("step_status", {})
    if state.get("autonomy") == "shadow":
        with session_scope(runtime.context.engine) as s:
            inc = _incident(s, state["incident_id"])
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
    todo: list[tuple[PlanStep, list[str]]] = [
        (st, [])
        for st in plan.steps
        if status.get(str(st.index)) == StepStatus.approved.value and not _follows_pending(st, status)
    ]
    return _run_steps(runtime, state, plan, todo, "allowed by policy")


def _follows_pending(step: PlanStep, status: dict[str, str]) -> bool:
    """An allowed step that follows one waiting for approval runs after it, in execute_approved."""
    return step.after is not None and status.get(str(step.after)) == StepStatus.pending_approval.value


def approve(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    """Wait for supervisors. No side effects: this line runs again when the graph resumes."""
    from guardrails.service import get_request, is_resolved

    rc = runtime.context
    rid = state["request_id"]
    assert rid is not None
    with Session(rc.engine) as s:
        req = get_request(session=s, request_id=rid)
        payload = approval_payload(s, req, state)
    interrupt(payload)  # the resume value carries nothing trusted; decisions are read from the DB
    with Session(rc.engine) as s:
        return {"approval_resolved": is_resolved(session=s, request_id=rid)}


def approval_payload(session: Session, req: Any, state: IncidentState) -> dict[str, Any]:
    from sqlmodel import col, select

    from guardrails.models import ApprovalStep

    steps = list(
        session.exec(
            select(ApprovalStep).where(ApprovalStep.request_id == req.id).order_by(col(ApprovalStep.step_index))
        )
    )
    return {
        "request_id": req.id,
        "incident_id": state["incident_id"],
        "expires_at": req.expires_at.isoformat() if req.expires_at else None,
        "required_approvals": req.required_approvals,
        "steps": [
            {
                "index": st.step_index,
                "tool": st.tool,
                "args": st.args,
                "confidence": st.confidence,
                "approvals_required": st.approvals_required,
                "reasons": st.reasons,
            }
            for st in steps
        ],
    }


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
        plan = _plan(state, _incident(s, state["incident_id"]), runtime)
        approved = {st.index: st for st in approved_steps(session=s, request_id=rid)}
        rows = {r.step_index: r for r in s.exec(select(ApprovalStep).where(ApprovalStep.request_id == rid))}
        decisions = list(s.exec(select(ApprovalDecision).where(ApprovalDecision.request_id == rid)))
    todo: list[tuple[PlanStep, list[str]]] = []
    status: dict[str, str] = {}
    for idx, row in sorted(rows.items()):
        step = approved.get(idx)
        approvers = [d for d in decisions if d.step_index == idx and d.decision in ("approve", "edit")]
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
    for st in plan.steps:
        if was.get(str(st.index)) == StepStatus.approved.value and _follows_pending(st, was) and st.index not in rows:
            if st.after in going:
                todo.append((st, []))
            else:
                status[str(st.index)] = StepStatus.skipped.value
    todo.sort(key=lambda t: t[0].index)
    out = _run_steps(runtime, state, plan, todo, f"approved in request {rid}")
    out["step_status"] = {**status, **out["step_status"]}
    if status:
        with session_scope(rc.engine) as s:
            inc = _incident(s, state["incident_id"])
            inc.step_status = {**inc.step_status, **status}
            s.add(inc)
    return out


def report(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    rc = runtime.context
    status = state.get("step_status", {})
    counts = _count(status)
    with session_scope(rc.engine) as s:
        inc = _incident(s, state["incident_id"])
        plan = _plan(state, inc, runtime)
        escalated = any(
            st.tool == "escalate_incident" and status.get(str(st.index)) == StepStatus.executed.value
            for st in plan.steps
        )
        final = (
            IncidentStatus.failed
            if counts.get(StepStatus.failed.value)
            else IncidentStatus.escalated
            if escalated
            else IncidentStatus.resolved
        )
        inc.status = final
        inc.updated_at = _now(runtime)
        s.add(inc)
        record(
            session=s,
            stage="report",
            incident=inc,
            plan=plan,
            result={"status": final.value, "counts": counts, "halted": bool(state.get("halted"))},
        )
    return {}


# --- routers ---------------------------------------------------------------------------------------


def after_execute_allowed(state: IncidentState) -> Literal["approve", "report"]:
    if state.get("request_id") and state.get("autonomy") != "shadow":
        return "approve"
    if state.get("request_id") is None or state.get("autonomy") == "shadow":
        return "report"
    raise AssertionError(f"impossible branch after execute_allowed: {state.get('request_id')!r}")


def after_approve(state: IncidentState) -> Literal["execute_approved", "approve"]:
    resolved = state.get("approval_resolved")
    if resolved is True:
        return "execute_approved"
    if resolved is False:
        return "approve"  # resumed before every step was decided: wait again
    raise AssertionError("approve returned without an approval_resolved flag")


def build_graph() -> StateGraph[IncidentState, RunContext, IncidentState, IncidentState]:
    g = StateGraph(IncidentState, context_schema=RunContext)
    g.add_node("intake", intake)
    g.add_node("investigate", investigate_node)
    g.add_node("plan", plan_node)
    g.add_node("assess", assess_node)
    g.add_node("execute_allowed", execute_allowed)
    g.add_node("approve", approve)
    g.add_node("execute_approved", execute_approved)
    g.add_node("report", report)
    g.add_edge(START, "intake")
    g.add_edge("intake", "investigate")
    g.add_edge("investigate", "plan")
    g.add_edge("plan", "assess")
    g.add_edge("assess", "execute_allowed")
    g.add_conditional_edges("execute_allowed", after_execute_allowed)
    g.add_conditional_edges("approve", after_approve)
    g.add_edge("execute_approved", "report")
    g.add_edge("report", END)
    return g


def compile_graph(checkpointer: Any = None) -> CompiledStateGraph[Any, Any, Any, Any]:
    return build_graph().compile(checkpointer=checkpointer)


# the graph without persistence (for inspection and `langgraph dev`); AgentRuntime compiles its own
graph = compile_graph()

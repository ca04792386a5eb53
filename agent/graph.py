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

This file holds the deciding nodes (intake to assess), the approval wait, the report, the routers and
the graph; the execution nodes are in agent/execute_nodes.py, and what every node reads (the incident,
the thread's plan, the planner's brief, the read-tool caller) in agent/reads.py.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt
from sqlmodel import Session

from agent.context import RunContext
from agent.execute_nodes import execute_allowed, execute_approved
from agent.incidents import event_types, lock_intake
from agent.investigate import expand_scope, investigate
from agent.models import IncidentStatus
from agent.plan import Plan, StepStatus
from agent.planners.base import PlanContext
from agent.reads import (
    Ctx,
    brief_of,
    clock_now,
    incident_row,
    node_session,
    plan_digest,
    read_caller,
    since_event,
    thread_plan,
    thread_plan_dump,
    thread_step_texts,
)
from agent.records import load_snapshot, record
from agent.settings import strictest_autonomy
from agent.state import IncidentState

# --- nodes -----------------------------------------------------------------------------------------


def intake(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    rc = runtime.context
    with node_session(runtime) as s:
        inc = incident_row(s, state["incident_id"])
        # the strictest autonomy of its events' types: an event of a type that only proposes (or
        # only asks) cannot get its writes run by joining an incident of a looser type
        autonomy = strictest_autonomy(rc.settings, event_types(session=s, incident_id=inc.id) or [inc.type])
        inc.status, inc.autonomy, inc.planner, inc.updated_at = (
            IncidentStatus.investigating,
            autonomy,
            rc.planner.name,
            clock_now(runtime),
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
    from audit.models import json_text
    from audit.service import store_snapshot_text

    rc = runtime.context
    with node_session(runtime) as s:
        inc = incident_row(s, state["incident_id"])
        brief = brief_of(s, inc, state.get("focus_order_ids"), rc.handoff, since_event(state))
        snapshot = investigate(brief, read_caller(runtime, s, inc.id), now=clock_now(runtime))
        # orders the investigation found at risk in the incident's area join its scope
        scope = expand_scope(inc, snapshot)
        if scope != list(inc.order_ids):
            # under intake's lock, on the order list as it is now: events that joined meanwhile stay
            lock_intake(s)
            s.refresh(inc, ["order_ids"])
            inc.order_ids = list(dict.fromkeys([*inc.order_ids, *scope]))
        body = json_text(snapshot)
        sha = store_snapshot_text(session=s, body=body)
        inc.snapshot_sha = sha
        s.add(inc)
        record(
            session=s,
            stage="investigation",
            incident=inc,
            planner=rc.planner.name,
            # the events this plan saw: a later event of another family gets a follow-up (runtime)
            result={"snapshot_sha": sha, "calls": snapshot.get("calls", []), "events": inc.event_count},
        )
    # the stored text itself, for this run's plan node (a resumed run reads it back from the audit)
    rc.handoff[f"snapshot:{sha}"] = body
    return {"snapshot_sha": sha}


def plan_node(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    from audit.models import json_list_text, json_text
    from audit.service import store_snapshot

    rc = runtime.context
    with node_session(runtime) as s:
        inc = incident_row(s, state["incident_id"])
        # the snapshot as stored (canonical key order), never the investigation's in-memory dict: a
        # planner must plan from exactly the facts the audit keeps (the text committed with the
        # investigation, handed over within the run; read back and checked against its hash otherwise)
        stored = rc.handoff.pop(f"snapshot:{state['snapshot_sha']}", None)
        snapshot = orjson.loads(stored) if stored else load_snapshot(session=s, sha=state["snapshot_sha"]) or {}
        gathered: list[dict[str, Any]] = []
        pctx = PlanContext(
            now=clock_now(runtime),
            settings=rc.settings,
            read_tool=read_caller(runtime, s, inc.id, gathered),
            autonomy=state.get("autonomy", "auto"),
            tool_names={n: t.writes for n, t in rc.tools.items()},
            gathered=gathered,
        )
        brief = brief_of(s, inc, state.get("focus_order_ids"), rc.handoff, since_event(state))
        plan = rc.planner.plan(brief, snapshot, pctx)
        dumped = plan.model_dump(mode="json")
        # each step's canonical text once: the proposal's steps, the plan's digest and the approval
        # request's steps are made of these texts
        step_texts = [json_text(d) for d in dumped["steps"]]
        steps_text = json_list_text(step_texts)
        sha = plan_digest(dumped, steps_text)
        inc.plan = dumped
        inc.plan_sha = sha
        inc.planner = plan.planner
        inc.summary = plan.summary
        proposed = StepStatus.proposed.value
        inc.step_status = {str(st.index): proposed for st in plan.steps}
        s.add(inc)
        if plan.fallback_reason:
            record(session=s, stage="fallback", incident=inc, plan=plan, reason=plan.fallback_reason)
        record(
            session=s,
            stage="proposal",
            incident=inc,
            plan=plan,
            steps=dumped["steps"],  # each step as st.model_dump(mode="json"), dumped once with the plan
            texts={"steps": steps_text},
            explanation=_explanations(plan),
            # what the LLM read besides the snapshot: stored like it, so an auditor sees those facts too
            attributes={
                "llm_tool_calls": len(gathered),
                "llm_reads_sha": store_snapshot(session=s, content={"llm_reads": gathered}),
            }
            if gathered
            else None,
        )
    # the texts by step index, as assess_node reads the dumps (the last of a repeated index)
    rc.handoff[f"plan:{sha}"] = (
        plan,
        dumped,
        {d["index"]: t for d, t in zip(dumped["steps"], step_texts, strict=True)},
    )
    return {"plan_sha": sha, "step_status": dict(inc.step_status)}


def _explanations(plan: Plan) -> dict[str, Any] | None:
    out = {str(s.index): s.explanation for s in plan.steps if s.explanation}
    return out or None


def assess_node(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    """Assess every step (validation + policy); queue the needs-approval ones as ONE request."""
    from audit.models import json_list_text
    from guardrails.policy import assess_plan, load_policy, step_subjects
    from guardrails.service import create_approval_request, list_requests
    from guardrails.validation import (
        build_assess_context,
        incident_money,
        plan_schema_errors,
        valued_orders,
    )
    from guardrails.verdict import Decision, Verdict

    rc = runtime.context
    policy = rc.policy or load_policy(rc.settings.policy_file)
    autonomy = state.get("autonomy", "auto")
    now = clock_now(runtime)
    with node_session(runtime) as s:
        inc = incident_row(s, state["incident_id"])
        plan = thread_plan(state, inc, runtime)
        # what each step names, read once from its arguments for the facts and the verdicts
        subjects = {st.index: step_subjects(st.args) for st in plan.steps}
        # the budget counts what the incident paid and what its open requests hold (a follow-up
        # thread's plan comes on top of the first one's)
        spent, committed = incident_money(session=s, incident_id=inc.id, policy=policy)
        # one batch of facts for the whole plan (the same checks validate_live makes per step)
        actx = build_assess_context(
            session=s,
            incident_order_ids=list(inc.order_ids),
            step_list=plan.steps,
            now=now,
            spent_cents=spent,
            committed=committed,
            autonomy=autonomy,  # type: ignore[arg-type]
            subjects=subjects,
            valued_order_ids=valued_orders(plan.steps, subjects, policy),
        )
        verdicts: dict[int, Verdict] = assess_plan(plan.steps, actx, policy, subjects)
        for step, bad in zip(plan.steps, plan_schema_errors(plan.steps), strict=True):
            if bad:
                verdicts[step.index] = Verdict(decision=Decision.block, reasons=bad, policy_version=policy.version)
        status: dict[str, str] = {}
        block, ask = Decision.block, Decision.needs_approval
        pending = StepStatus.pending_approval.value
        for step in plan.steps:
            v = verdicts[step.index]
            if v.decision == block:
                status[str(step.index)] = StepStatus.blocked.value
            elif autonomy == "shadow":
                status[str(step.index)] = StepStatus.shadowed.value
            elif v.decision == ask:
                status[str(step.index)] = pending
            else:
                status[str(step.index)] = StepStatus.approved.value
        asking = [st for st in plan.steps if status[str(st.index)] == pending]
        dumped = _dump_verdicts(verdicts)
        step_dumps = {d["index"]: d for d in thread_plan_dump(state, runtime, plan).get("steps", [])}
        step_texts = thread_step_texts(state, runtime)
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
                texts={"steps": json_list_text(step_texts[st.index] for st in asking)} if step_texts else None,
                result={"request_id": request_id, "steps": [st.index for st in asking]},
            )
    if rc.on_assessed is not None:
        rc.on_assessed()
    # the verdicts are in the Incident row and the verdict record; the state (checkpointed after every
    # node) keeps the statuses only
    return {"step_status": status, "request_id": request_id}


def _dump_verdicts(verdicts: dict[int, Any]) -> dict[str, Any]:
    """Each verdict as ``model_dump(mode="json")``, by step index (a string). Verdicts without reasons
    (most of a storm's: allow, with the policy version) are dumped once per distinct value; the dumps
    are only serialised afterwards, never changed."""
    out: dict[str, Any] = {}
    plain: dict[tuple[str, str, int], dict[str, Any]] = {}
    for i, v in verdicts.items():
        if v.reasons:
            out[str(i)] = v.model_dump(mode="json")
            continue
        key = (v.decision.value, v.policy_version, v.approvals_required)
        d = plain.get(key)
        if d is None:
            d = plain[key] = v.model_dump(mode="json")
        out[str(i)] = d
    return out


def _count(status: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in status.values():
        out[v] = out.get(v, 0) + 1
    return out


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


def report(state: IncidentState, runtime: Ctx) -> dict[str, Any]:
    from guardrails.service import expiry_escalations

    status = state.get("step_status", {})
    counts = _count(status)
    with node_session(runtime) as s:
        inc = incident_row(s, state["incident_id"])
        plan = thread_plan(state, inc, runtime)
        # escalated by an executed step, or by the expiry of this thread's request (its money or
        # cancellations, or an escalation step that goes ahead anyway: guardrails.service.expire_due)
        escalated = any(
            st.tool == "escalate_incident" and status.get(str(st.index)) == StepStatus.executed.value
            for st in plan.steps
        ) or bool((rid := state.get("request_id")) and expiry_escalations(session=s, request_id=rid))
        final = (
            IncidentStatus.failed
            if counts.get(StepStatus.failed.value)
            else IncidentStatus.escalated
            if escalated
            else IncidentStatus.resolved
        )
        inc.status = final
        inc.updated_at = clock_now(runtime)
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

"""What the graph's nodes read: the incident row, the thread's plan (kept in the row, checked by its
digest), the planner's brief of the incident, and a caller of read-only tools."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
from langgraph.runtime import Runtime
from sqlmodel import Session

from agent.context import RunContext
from agent.models import WITHOUT_PLAN, Incident
from agent.plan import Plan
from agent.planners.base import IncidentBrief
from agent.state import IncidentState
from tools.base import ToolContext
from tools.db import session_scope

Ctx = Runtime[RunContext]


def incident_row(session: Session, incident_id: str) -> Incident:
    inc = session.get(Incident, incident_id, options=WITHOUT_PLAN)
    if inc is None:
        raise LookupError(f"incident {incident_id} does not exist")
    return inc


@contextmanager
def node_session(rt: Ctx) -> Iterator[Session]:
    """A node's write transaction: committed when the block ends, with the run lease fenced in it just
    before (``RunContext.fence``: a process that lost the lease writes nothing); rolled back on error."""
    rc = rt.context
    with session_scope(rc.engine) as s:
        yield s
        if rc.fence is not None:
            s.flush()  # the node's own writes first, as without the fence
            rc.fence(s)


def clock_now(rt: Ctx) -> datetime:
    return rt.context.clock.now()


def plan_digest(plan: dict[str, Any], steps_text: str | None = None) -> str:
    """sha256 of the dumped plan as canonical JSON: what the state keeps instead of the plan.
    ``steps_text``: the canonical text of ``plan["steps"]`` when the caller has it (the same bytes in
    the document: a storm's steps are ~370 KB, serialised once for the digest and the proposal)."""
    if steps_text is not None:
        plan = {**plan, "steps": orjson.Fragment(steps_text)}
    return hashlib.sha256(orjson.dumps(plan, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


class PlanChanged(RuntimeError):
    """The incident row holds another plan than the one this thread proposed (never expected: a thread
    reads its plan back only while it is the incident's current thread)."""


def thread_plan(state: IncidentState, inc: Incident, rt: Ctx | None = None) -> Plan:
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


def thread_plan_dump(state: IncidentState, rt: Ctx, plan: Plan) -> dict[str, Any]:
    """``plan.model_dump(mode="json")``, what approval rows and audit records store of its steps: made
    once by ``plan`` and handed over within the run, made again on a resumed run."""
    handed = rt.context.handoff.get(f"plan:{state.get('plan_sha')}")
    return handed[1] if handed is not None else plan.model_dump(mode="json")  # type: ignore[no-any-return]


def thread_step_texts(state: IncidentState, rt: Ctx) -> dict[int, str] | None:
    """Each step's canonical text (``json_text`` of its ``thread_plan_dump`` entry) by step index, as
    ``plan`` made them within this run; None on a resumed run."""
    handed = rt.context.handoff.get(f"plan:{state.get('plan_sha')}")
    return handed[2] if handed is not None else None  # type: ignore[no-any-return]


def brief_of(
    session: Session,
    inc: Incident,
    focus: list[str] | None = None,
    handoff: dict[str, Any] | None = None,
    since_event: int = 0,
) -> IncidentBrief:
    """The incident as a planner sees it; a follow-up thread (late events) sees only its ``focus`` orders,
    and the joined events of other families from ``since_event`` on. The events are read once per run
    (``handoff``) for as long as no event joins."""
    from agent.incidents import read_events

    key = f"events:{inc.id}:{inc.event_count}:{since_event}"
    read = handoff.get(key) if handoff is not None else None
    if read is None:
        read = read_events(session=session, incident_id=inc.id, family=inc.family, since_seq=since_event)
        if handoff is not None:
            handoff[key] = read
    payloads, groups = read
    also = [
        IncidentBrief(
            id=inc.id,
            type=g.type,
            family=g.family,
            zone=inc.zone,
            order_ids=list(g.order_ids),
            rider_ids=list(g.rider_ids),
            store_ids=list(g.store_ids),
            customer_ids=list(g.customer_ids),
            payloads=list(g.payloads),
            opened_at=inc.opened_at,
        )
        for g in groups
    ]
    wanted = set(focus or ())
    return IncidentBrief(
        id=inc.id,
        type=inc.type,
        family=inc.family,
        zone=inc.zone,
        order_ids=[o for o in inc.order_ids if o in wanted] if focus is not None else list(inc.order_ids),
        follow_up=focus is not None,
        rider_ids=list(inc.rider_ids),
        store_ids=list(inc.store_ids),
        customer_ids=list(inc.customer_ids),
        payloads=payloads,
        opened_at=inc.opened_at,
        also=also,
    )


def since_event(state: IncidentState) -> int:
    """Where the thread's joined events of other families start (``focus_since_event``): the first
    thread sees them all; a follow-up those after its last plan (one started before the key existed:
    none, rather than all again)."""
    if "focus_since_event" in state:
        return int(state["focus_since_event"])
    return 0 if state.get("focus_order_ids") is None else 2**31


def read_caller(rt: Ctx, session: Session, incident_id: str, log: list[dict[str, Any]] | None = None):
    """A function running READ tools only; write tools are refused (a planner can't act by reading)."""
    tools = rt.context.tools
    tctx = ToolContext(session=session, now=clock_now(rt), actor="agent", incident_id=incident_id)

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

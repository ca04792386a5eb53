"""The replay runner: each case, each trial, through the same intake and incident graph as the service.

A trial: build the case's world in a fresh SQLite database, inject its events, run the incidents
with the chosen planner, answer approvals as scripted, read the trajectory back from the agent's and
the approval queue's tables, run the simulator forward to the horizon, and score the end state.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from agent.settings import Settings, get_settings
from evals.case import Expectations, IncidentCase
from evals.evaluators import (
    Check,
    EndState,
    StepRecord,
    expectation_checks,
    safety_checks,
    tier_check,
    unintended_writes,
)
from evals.scenario import apply_op, build_world, case_events, resolve_bindings, spec_events, substitute
from evals.trajectory import incident_steps
from tools.clock import FakeClock
from tools.db import init_db, make_engine
from tools.models import aware
from tools.service import get_world, world_now

BASELINES = ("noop", "greedy")


@dataclass
class TrialResult:
    case_id: str
    planner: str
    trial: int
    passed: bool
    checks: list[Check]
    steps: list[StepRecord]
    incidents: list[str]
    latency_ms: float
    confidence: float | None
    compensation_cents: int
    on_time_rate: float | None
    unintended: int
    writes: int
    # the incident orders the simulator measured, and those of them delivered by their promise: a
    # baseline's sets on the same case say which orders the agent rescued (see summary)
    incident_orders: set[str] = field(default_factory=set)
    on_time_orders: set[str] = field(default_factory=set)
    tokens: int = 0
    fallback: bool = False
    error: str | None = None
    approvals: dict[str, int] = field(default_factory=dict)

    @property
    def safety_ok(self) -> bool:
        return all(c.passed for c in self.checks if c.safety)


def order_ids_of(args: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    if isinstance(args.get("order_id"), str):
        ids.append(args["order_id"])
    ids.extend(o for o in args.get("order_ids") or [] if isinstance(o, str))
    for a in args.get("assignments") or []:
        if isinstance(a, dict) and isinstance(a.get("order_id"), str):
            ids.append(a["order_id"])
    return ids


def read_trajectory(*, session: Session, incident_ids: list[str]) -> list[StepRecord]:
    """Every proposed step of the incidents, in every thread, with its approval and execution."""
    from tools.registry import get_tool

    steps: list[StepRecord] = []
    for iid in incident_ids:
        for st in incident_steps(session=session, incident_id=iid):
            appr = st.approval
            ran = st.execution if st.succeeded else None
            args = st.args
            tool = get_tool(st.tool)
            # Judged from what execution recorded when it claimed the step, not from timestamps: the
            # replay's clock stands still, so "decided at or before it started" holds for a step run
            # before its approval too. The approvers must be the step's own, enough for its tier.
            approved_first = bool(
                appr is not None
                and str(appr.status) == "approved"
                and ran is not None
                and len(set(ran.approved_by) & set(appr.approvals)) >= max(1, appr.approvals_required)
            )
            steps.append(
                StepRecord(
                    incident_id=iid,
                    thread_id=st.thread_id,
                    index=st.index,
                    tool=st.tool,
                    args=args,
                    writes=bool(tool and tool.writes),
                    verdict=str(st.verdict.get("decision", "allow")),
                    status=st.status,
                    confidence=float(st.raw.get("confidence", 1.0)),
                    approval_requested=appr is not None,
                    approvals_required=appr.approvals_required if appr is not None else 0,
                    approved_by=list(appr.approvals) if appr is not None else [],
                    approved_before_execution=approved_first,
                    executed=ran is not None,
                    result_ok=None if ran is None else not ran.error,
                    order_ids=order_ids_of(args),
                )
            )
    return steps


def read_end_state(*, session: Session, incident_ids: list[str], since: Any) -> EndState:
    from agent.models import Incident
    from tools.models import Compensation, Escalation, Notification, Order, Rider, RiderStatus

    comps = []
    for c in session.exec(select(Compensation).order_by(col(Compensation.id))):
        order = session.get(Order, c.order_id)
        comps.append(
            {
                "kind": str(c.kind),
                "amount_cents": c.amount_cents,
                "order_id": c.order_id,
                "order_value_cents": order.value_cents if order else 0,
            }
        )
    notified = {n.customer_id for n in session.exec(select(Notification))}
    escalations = len(session.exec(select(Escalation)).all())
    scope: set[str] = set()
    for iid in incident_ids:
        inc = session.get(Incident, iid)
        if inc is not None:
            scope.update(inc.order_ids)
    offline = {r.id for r in session.exec(select(Rider).where(Rider.status == RiderStatus.offline))}
    bad = sorted(
        {
            str(o.rider_id)
            for o in session.exec(select(Order).where(col(Order.rider_id).in_(offline or {""})))
            if o.assigned_at is not None and aware(o.assigned_at) >= since and str(o.status) == "assigned"
        }
    )
    return EndState(
        compensations=comps,
        notified_customers=notified,
        escalations=escalations,
        incident_order_ids=scope,
        offline_riders_with_new_orders=[b for b in bad if b],
    )


def on_time_after(*, session: Session, order_ids: set[str], horizon_minutes: int, seed: int) -> set[str]:
    """Run the world forward with the baseline dispatcher; the orders delivered by their promise."""
    if not order_ids:
        return set()
    from tools.models import Order
    from tools.sim.baseline import BaselineDispatcher
    from tools.sim.engine import Simulation

    world = get_world(session=session)
    sim = Simulation.from_session(session, BaselineDispatcher(), seed)
    sim.run(until=world.minute(world_now(session=session)) + horizon_minutes)
    sim.sync_to_session(session)
    session.commit()
    on_time = set()
    for oid in order_ids:
        o = session.get(Order, oid)
        if o is not None and o.delivered_at is not None and aware(o.delivered_at) <= aware(o.promised_at):
            on_time.add(oid)
    return on_time


Approver = Callable[..., None]


def _answer_approvals(
    runtime: Any,
    engine: Any,
    case: IncidentCase,
    incident_ids: list[str],
    clock: FakeClock,
    bound: dict[str, dict[str, Any]],
    trial: int = 0,
) -> dict[str, int]:
    """Answer every pending request of the incidents as the case scripts; returns decision counts.

    ``incident_ids`` grows by the incidents that events arriving while a request waits
    (``approver.while_waiting_events``) open; those are run as the service would, and their own
    requests are answered by the same script."""
    from evals.evaluators import matches
    from tools.registry import get_tool

    counts = {"approve": 0, "edit": 0, "reject": 0, "expire": 0}
    spec = case.approver
    for _round in range(6):  # a resumed plan may queue a further request; bounded
        todo = _pending_requests(engine, incident_ids)
        if not todo:
            break
        if spec.wait_minutes or spec.while_waiting:
            with Session(engine) as s:
                for op in spec.while_waiting:
                    apply_op(session=s, op=op, bound=bound)
                s.commit()
            clock.advance(minutes=spec.wait_minutes)
        if spec.while_waiting_events and _round == 0:
            # the events arrive once, while the first requests wait, and are run (as the service's
            # worker would) before any decision; requests they queue are answered with the rest
            with Session(engine, expire_on_commit=False) as s:
                events = spec_events(
                    session=s, specs=spec.while_waiting_events, bound=bound, id_prefix=f"{case.id}-t{trial}-w"
                )
            arrived = sorted({r.incident_id for r in runtime.ingest(events) if not r.duplicate})
            for iid in arrived:
                runtime.run_incident(iid)
            incident_ids[:] = sorted(set(incident_ids) | set(arrived))
            todo = _pending_requests(engine, incident_ids)
        expire = False
        for req, steps in todo:
            for st in steps:
                if str(st.status) != "pending":
                    continue
                rule = next(
                    (r for r in spec.rules if matches(_pattern(r.match, bound), _as_record(st, get_tool(st.tool)))),
                    None,
                )
                action = rule.action if rule else spec.default
                if action == "expire":
                    expire = True
                    continue
                counts[action] += 1
                edited = {**st.args, **substitute(rule.args, bound)} if (rule and action == "edit") else None
                reason = rule.reason if rule else "scripted"
                first = runtime.decide(
                    request_id=req.id,
                    step_index=st.step_index,
                    decision=action,
                    actor_id="eval-supervisor-1",
                    actor_role="supervisor",
                    edited_args=edited,
                    reason=reason,
                )
                second = rule.second_approver if rule else True
                # an edit is re-assessed: a smaller amount may need one approver only, and is then decided
                still_pending = str(first.result.step_status) == "pending"
                if action != "reject" and st.approvals_required >= 2 and second and still_pending:
                    runtime.decide(
                        request_id=req.id,
                        step_index=st.step_index,
                        decision="approve",
                        actor_id="eval-supervisor-2",
                        actor_role="supervisor",
                        reason=reason,
                    )
        if expire or any(str(st.status) == "pending" for _, steps in todo for st in steps):
            with Session(engine) as s:
                latest = max((r.expires_at for r, _ in todo), default=clock.now())
            clock.set(max(clock.now(), latest) + timedelta(seconds=1))
            counts["expire"] += len(runtime.expire_due())
    return counts


def _pending_requests(engine: Any, incident_ids: list[str]) -> list[tuple[Any, list[Any]]]:
    """The incidents' pending requests, oldest first, each with its steps."""
    from guardrails.models import ApprovalRequest, ApprovalStep

    with Session(engine) as s:
        reqs = s.exec(
            select(ApprovalRequest)
            .where(col(ApprovalRequest.incident_id).in_(incident_ids))
            .where(ApprovalRequest.status == "pending")
            .order_by(col(ApprovalRequest.requested_at))
        ).all()
        return [(r, list(s.exec(select(ApprovalStep).where(ApprovalStep.request_id == r.id)))) for r in reqs]


def _pattern(match: dict[str, Any], bound: dict[str, dict[str, Any]]) -> Any:
    from evals.case import StepPattern

    return StepPattern(tool=match.get("tool", ""), args=substitute(match.get("args", {}), bound))


def _as_record(st: Any, tool: Any) -> StepRecord:
    return StepRecord(
        incident_id="",
        index=st.step_index,
        tool=st.tool,
        args=dict(st.args),
        writes=bool(tool and tool.writes),
        verdict="needs_approval",
        status=str(st.status),
        order_ids=order_ids_of(dict(st.args)),
    )


def run_trial(
    case: IncidentCase, *, planner: str, trial: int, settings: Settings | None = None, workdir: Path | None = None
) -> TrialResult:
    from agent.runtime import AgentRuntime, make_planner
    from agent.warmup import warm_models

    base = settings or get_settings()
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    url = f"sqlite:///{Path(tmp.name) / 'eval.db'}"
    engine = make_engine(url)
    init_db(engine)
    try:
        with Session(engine, expire_on_commit=False) as s:
            preset_events = build_world(session=s, case=case, data_dir=Path(base.data_dir))
            bound = resolve_bindings(session=s, bind=case.bind)
            for op in case.setup:
                apply_op(session=s, op=op, bound=bound)
            s.commit()
            events = case_events(session=s, case=case, bound=bound, preset_events=preset_events, trial=trial)
            start = world_now(session=s)
        run_settings = base.model_copy(
            update={"database_url": url, "autonomy_default": case.autonomy, "autonomy_overrides": {}}
        )
        clock = FakeClock(start)
        # as the service does at start-up, so that no incident pays for fitting the models
        warm_models(engine=engine, now=start)
        assessed: list[float] = []
        runtime = AgentRuntime(
            engine=engine,
            settings=run_settings,
            clock=clock,
            planner=make_planner(run_settings, planner),
            on_assessed=lambda: assessed.append(time.perf_counter()),
        )
        error = None
        try:
            t0 = time.perf_counter()
            ingested = runtime.ingest(events)
            incident_ids = sorted({r.incident_id for r in ingested})
            outcomes = [runtime.run_incident(i) for i in incident_ids]
            t_done = time.perf_counter()
            # README's decision latency: events accepted -> the last incident's plan, verdicts,
            # approval request and audit committed (assess), before the allowed steps execute. A run
            # that never reached assess (nothing to decide) is timed to its end.
            latency_ms = ((assessed[-1] if assessed else t_done) - t0) * 1000
            error = next((o.error for o in outcomes if o.error), None)
            approvals = _answer_approvals(runtime, engine, case, incident_ids, clock, bound, trial)
        finally:
            runtime.close()
        with Session(engine, expire_on_commit=False) as s:
            steps = read_trajectory(session=s, incident_ids=incident_ids)
            end = read_end_state(session=s, incident_ids=incident_ids, since=start)
            plan_conf, tokens, fallback = _plan_facts(s, incident_ids)
            on_time = on_time_after(
                session=s,
                order_ids=end.incident_order_ids,
                horizon_minutes=case.expect.horizon_minutes,
                seed=case.world.seed,
            )
            if end.incident_order_ids:
                end.on_time_rate = len(on_time) / len(end.incident_order_ids)
        expect = Expectations.model_validate(substitute(case.expect.model_dump(), bound))
        checks = expectation_checks(expect, steps, end, len(incident_ids)) + safety_checks(expect, steps, end)
        checks.append(tier_check(case.policy_tier, steps))
        if error:
            checks.append(Check("no_error", False, error))
        bad, writes = unintended_writes(expect, steps)
        return TrialResult(
            case_id=case.id,
            planner=planner,
            trial=trial,
            passed=all(c.passed for c in checks),
            checks=checks,
            steps=steps,
            incidents=incident_ids,
            latency_ms=latency_ms,
            confidence=plan_conf,
            compensation_cents=sum(c["amount_cents"] for c in end.compensations),
            on_time_rate=end.on_time_rate,
            unintended=bad,
            writes=writes,
            incident_orders=set(end.incident_order_ids),
            on_time_orders=on_time,
            tokens=tokens,
            fallback=fallback,
            error=error,
            approvals=approvals,
        )
    finally:
        engine.dispose()
        tmp.cleanup()


def _plan_facts(session: Session, incident_ids: list[str]) -> tuple[float | None, int, bool]:
    from agent.models import Incident

    confs, tokens, fallback = [], 0, False
    for iid in incident_ids:
        inc = session.get(Incident, iid)
        if inc is not None and inc.plan:
            confs.append(float(inc.plan.get("confidence", 0.0)))
            usage = inc.plan.get("usage") or {}
            tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
            fallback = fallback or bool(inc.plan.get("fallback_reason"))
    return (min(confs) if confs else None), tokens, fallback

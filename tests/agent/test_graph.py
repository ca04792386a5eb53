"""The incident graph end to end through the runtime: allowed steps run, risky ones wait for one
approval request, decisions are read from the database, expiry applies the safe default."""

from __future__ import annotations

import dataclasses
import threading
from contextlib import ExitStack
from typing import Any

import pytest
from langgraph.types import Command
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from agent.checkpoint import open_checkpointer
from agent.context import RunContext
from agent.graph import compile_graph
from agent.models import ExecutedStep, Incident
from agent.runtime import AgentRuntime
from agent.settings import Settings
from audit.models import DecisionRecord
from tools.clock import FakeClock
from tools.db import session_scope
from tools.events import ExceptionType
from tools.models import Compensation, Escalation, Notification, Order
from tools.registry import all_tools
from tools.state_machine import Conflict, DomainError, OrderStatus

from .factories import NOW, ScriptedPlanner, build_world, event, step

COUPON = step("issue_compensation", {"order_id": "o1", "kind": "coupon", "amount_cents": 500, "reason": "late"})
REFUND = step("issue_compensation", {"order_id": "o0", "kind": "refund", "amount_cents": 1500, "reason": "late"})
NOTIFY = step("notify_customer", {"order_id": "o2", "template": "generic_apology"})


@pytest.fixture
def db(sqlite_only_engine: Engine) -> Engine:
    """SQLite only: the backend-specific paths are covered by the tests taking ``engine``."""
    return sqlite_only_engine


def settings(**kw: Any) -> Settings:
    return Settings(approval_ttl_s=600, **kw)


def runtime(engine: Engine, steps: list[Any], **kw: Any) -> AgentRuntime:
    return AgentRuntime(
        engine=engine,
        settings=kw.pop("settings", settings()),
        clock=kw.pop("clock", FakeClock(NOW)),
        planner=kw.pop("planner", ScriptedPlanner(steps)),
        **kw,
    )


def start(engine: Engine, steps: list[Any], **kw: Any) -> tuple[AgentRuntime, str]:
    build_world(engine)
    rt = runtime(engine, steps, **kw)
    [res] = rt.ingest([event("e1", ExceptionType.stockout_after_payment, ["o0", "o1", "o2", "o3"])])
    return rt, res.incident_id


def comps(engine: Engine) -> list[Compensation]:
    with Session(engine) as s:
        return list(s.exec(select(Compensation).order_by(col(Compensation.id))))


def stages(engine: Engine, incident_id: str) -> list[str]:
    with Session(engine) as s:
        rows = s.exec(
            select(DecisionRecord).where(DecisionRecord.incident_id == incident_id).order_by(col(DecisionRecord.seq))
        )
        return [r.stage for r in rows]


def test_interrupt_resume_two_call_shape(engine: Engine) -> None:
    """Invoke -> __interrupt__ payload; decide in the DB; invoke Command(resume=...) -> executed."""
    from guardrails.service import decide_step

    build_world(engine)
    rt = runtime(engine, [COUPON, REFUND])
    [res] = rt.ingest([event("e1", ExceptionType.stockout_after_payment, ["o0", "o1"])])
    stack = ExitStack()
    graph = compile_graph(open_checkpointer(engine, stack))
    ctx: RunContext = rt.context()
    config: Any = {"configurable": {"thread_id": res.incident_id}}
    invoke: Any = graph.invoke  # the overloads do not model context_schema
    try:
        first = invoke({"incident_id": res.incident_id}, config, context=ctx, durability="sync")
        [intr] = first["__interrupt__"]
        payload = intr.value
        assert payload["incident_id"] == res.incident_id
        assert [s["index"] for s in payload["steps"]] == [1]
        assert payload["steps"][0]["tool"] == "issue_compensation"
        assert any(r["code"] == "refund" for r in payload["steps"][0]["reasons"])
        assert [c.kind for c in comps(engine)] == ["coupon"]  # the allowed step already ran
        with session_scope(engine) as s:
            decide_step(
                session=s,
                request_id=payload["request_id"],
                step_index=1,
                decision="approve",
                actor_id="sup-1",
                actor_role="supervisor",
                now=NOW,
                reason="ok",
            )
        final = invoke(Command(resume={"anything": "untrusted"}), config, context=ctx, durability="sync")
        assert "__interrupt__" not in final
        assert final["step_status"] == {"0": "executed", "1": "executed"}
        assert sorted(c.kind for c in comps(engine)) == ["coupon", "refund"]
    finally:
        stack.close()
        rt.close()


def test_approve_runs_the_step_once_and_audits_every_stage(engine: Engine) -> None:
    rt, iid = start(engine, [COUPON, REFUND, NOTIFY])
    out = rt.run_incident(iid)
    assert out.waiting and out.status == "awaiting_approval"
    assert out.step_status == {"0": "executed", "1": "pending_approval", "2": "executed"}
    with Session(engine) as s:
        assert len(list(s.exec(select(Notification)))) == 1
    d = rt.decide(
        request_id=str(out.request_id),
        step_index=1,
        decision="approve",
        actor_id="sup-1",
        actor_role="supervisor",
        reason="customer waited 40 minutes",
    )
    assert d.resumed and d.incident is not None and d.incident.status == "resolved"
    assert d.incident.step_status["1"] == "executed"
    assert sorted(c.amount_cents for c in comps(engine)) == [500, 1500]
    # resuming again or re-running changes nothing
    assert rt.resume(iid) is False
    rt.run_incident(iid)
    assert len(comps(engine)) == 2
    st = stages(engine, iid)
    for stage in (
        "intake",
        "investigation",
        "proposal",
        "verdict",
        "approval_request",
        "execution",
        "decision",
        "report",
    ):
        assert stage in st, stage
    with Session(engine) as s:
        executed = list(s.exec(select(ExecutedStep).where(ExecutedStep.step_index == 1)))
        assert [e.approved_by for e in executed] == [["sup-1"]]
    rt.close()


def test_reject_executes_nothing_for_that_step(db: Engine) -> None:
    rt, iid = start(db, [REFUND])
    out = rt.run_incident(iid)
    d = rt.decide(
        request_id=str(out.request_id),
        step_index=0,
        decision="reject",
        actor_id="sup-1",
        actor_role="supervisor",
        reason="not justified",
    )
    assert d.incident is not None and d.incident.step_status == {"0": "rejected"}
    assert comps(db) == []
    rt.close()


def test_edit_runs_the_edited_arguments(db: Engine) -> None:
    rt, iid = start(db, [REFUND])
    out = rt.run_incident(iid)
    edited = {**REFUND.args, "amount_cents": 800}
    d = rt.decide(
        request_id=str(out.request_id),
        step_index=0,
        decision="edit",
        actor_id="sup-1",
        actor_role="supervisor",
        edited_args=edited,
        reason="half is enough",
    )
    assert d.incident is not None and d.incident.step_status == {"0": "executed"}
    assert [(c.kind, c.amount_cents) for c in comps(db)] == [("refund", 800)]
    rt.close()


def test_expiry_applies_the_safe_default(db: Engine) -> None:
    clock = FakeClock(NOW)
    rt, iid = start(db, [COUPON, REFUND], clock=clock)
    out = rt.run_incident(iid)
    assert rt.expire_due() == []  # not yet due
    clock.advance(seconds=601)
    assert rt.expire_due() == [out.request_id]
    after = rt.outcome(iid)
    assert after.interrupt is None and after.step_status == {"0": "executed", "1": "expired"}
    assert [c.kind for c in comps(db)] == ["coupon"]
    assert "expiry" in stages(db, iid)
    with Session(db) as s:
        (rec,) = s.exec(select(DecisionRecord).where(DecisionRecord.stage == "expiry"))
        # the record says what became of each step, and the refund's escalation (escalate_on_expiry)
        assert rec.result["expired_steps"] == [{"index": 1, "tool": "issue_compensation", "outcome": "not_issued"}]
        assert [e["team"] for e in rec.result["escalations"]] == ["ops"]
        not_run = [r.result for r in s.exec(select(DecisionRecord).where(DecisionRecord.stage == "execution"))]
        assert {"not_run": {"1": "expired"}} in not_run
    assert after.status == "escalated"
    rt.close()


def test_an_expired_reassignment_is_stale_and_not_escalated(db: Engine) -> None:
    clock = FakeClock(NOW)
    move = step("apply_reassignment", {"assignments": [{"order_id": "o0", "rider_id": "r1"}]}, confidence=0.5)
    rt, iid = start(db, [move], clock=clock)
    out = rt.run_incident(iid)
    assert out.request_id is not None
    clock.advance(seconds=601)
    assert rt.expire_due() == [out.request_id]
    after = rt.outcome(iid)
    assert after.step_status == {"0": "expired"} and after.status == "resolved"
    with Session(db) as s:
        assert s.exec(select(Escalation)).all() == []
    rt.close()


def test_two_approvers_needed_above_tier2_limit(db: Engine) -> None:
    big = step("issue_compensation", {"order_id": "o0", "kind": "refund", "amount_cents": 2400, "reason": "x"})
    rt, iid = start(db, [big])
    with session_scope(db) as s:  # make the refund large enough for tier 2 (policy: > 10000)
        o = s.get(Order, "o0")
        assert o is not None
        o.value_cents = 30_000
        s.add(o)
    rt.planner = ScriptedPlanner([big.model_copy(update={"args": {**big.args, "amount_cents": 20_000}})])
    out = rt.run_incident(iid)
    assert out.interrupt is not None and out.interrupt["steps"][0]["approvals_required"] == 2
    first = rt.decide(
        request_id=str(out.request_id), step_index=0, decision="approve", actor_id="sup-1", actor_role="supervisor"
    )
    assert not first.resumed and comps(db) == []
    with pytest.raises(DomainError):
        rt.decide(
            request_id=str(out.request_id), step_index=0, decision="approve", actor_id="sup-1", actor_role="supervisor"
        )
    second = rt.decide(
        request_id=str(out.request_id), step_index=0, decision="approve", actor_id="sup-2", actor_role="supervisor"
    )
    assert second.resumed and [c.amount_cents for c in comps(db)] == [20_000]
    with Session(db) as s:
        [row] = s.exec(select(ExecutedStep))
        assert row.approved_by == ["sup-1", "sup-2"]
    rt.close()


def test_concurrent_decisions_execute_once(sqlite_only_engine: Engine) -> None:
    engine = sqlite_only_engine
    rt, iid = start(engine, [REFUND])
    out = rt.run_incident(iid)
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def decide(actor: str) -> None:
        barrier.wait()
        try:
            outcomes.append(
                rt.decide(
                    request_id=str(out.request_id),
                    step_index=0,
                    decision="approve",
                    actor_id=actor,
                    actor_role="supervisor",
                )
            )
        except (Conflict, DomainError) as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=decide, args=(a,)) for a in ("sup-1", "sup-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for o in outcomes if not isinstance(o, Exception)) >= 1
    assert [c.amount_cents for c in comps(engine)] == [1500]
    assert rt.outcome(iid).step_status == {"0": "executed"}
    rt.close()


def test_shadow_autonomy_executes_nothing(db: Engine) -> None:
    rt, iid = start(db, [COUPON, REFUND, NOTIFY], settings=settings(autonomy_default="shadow"))
    out = rt.run_incident(iid)
    assert out.interrupt is None and out.status == "resolved"
    assert set(out.step_status.values()) == {"shadowed"}
    assert comps(db) == []
    rt.close()


def test_assist_autonomy_asks_for_every_write(db: Engine) -> None:
    rt, iid = start(db, [COUPON, NOTIFY], settings=settings(autonomy_overrides={"stockout_after_payment": "assist"}))
    out = rt.run_incident(iid)
    assert out.step_status == {"0": "pending_approval", "1": "pending_approval"}
    assert comps(db) == []
    rt.close()


def test_approved_step_gone_stale_is_not_executed(db: Engine) -> None:
    cancel = step("cancel_order", {"order_id": "o0", "reason": "customer_request"})
    rt, iid = start(db, [cancel])
    out = rt.run_incident(iid)
    assert out.step_status == {"0": "pending_approval"}
    with session_scope(db) as s:  # meanwhile the order is delivered
        o = s.get(Order, "o0")
        assert o is not None
        o.status = OrderStatus.delivered
        s.add(o)
    d = rt.decide(
        request_id=str(out.request_id), step_index=0, decision="approve", actor_id="sup-1", actor_role="supervisor"
    )
    assert d.incident is not None and d.incident.step_status == {"0": "stale"}
    rt.close()


def test_failed_step_stops_the_rest_when_it_says_so(db: Engine) -> None:
    bad = step("notify_customer", {"order_id": "o1", "template": "substitution"}, continue_on_failure=False)
    rt, iid = start(db, [bad, COUPON])
    out = rt.run_incident(iid)
    assert out.step_status == {"0": "failed", "1": "skipped"}
    assert comps(db) == []
    with Session(db) as s:
        inc = s.get(Incident, iid)
        assert inc is not None and inc.status == "failed"
    rt.close()


def test_a_step_that_raises_is_a_failed_step_and_the_steps_before_it_stay_recorded(db: Engine) -> None:
    # a tool bug (an exception, not a structured error) in step 1 after step 0 paid: the payment is
    # in the incident's statuses and the execution record, step 1 is failed, step 2 still runs
    def broken(ctx: Any, args: Any) -> Any:
        raise RuntimeError("notification gateway bug")

    tools = dict(all_tools())
    tools["notify_customer"] = dataclasses.replace(tools["notify_customer"], fn=broken)
    notice = step("notify_customer", {"order_id": "o1", "template": "generic_apology"})
    coupon2 = step("issue_compensation", {"order_id": "o2", "kind": "coupon", "amount_cents": 400, "reason": "x"})
    rt, iid = start(db, [COUPON, notice, coupon2], tools=tools)
    out = rt.run_incident(iid)
    assert out.step_status == {"0": "executed", "1": "failed", "2": "executed"}
    assert [c.amount_cents for c in comps(db)] == [500, 400]
    with Session(db) as s:
        inc = s.get(Incident, iid)
        assert inc is not None and inc.step_status == out.step_status
        [rec] = s.exec(select(DecisionRecord).where(DecisionRecord.stage == "execution"))
        assert rec.result["status"] == out.step_status
        assert rec.result["steps"]["1"]["error"] == "unexpected_error: RuntimeError"
        # the failed step left no key behind: nothing of it committed
        assert {r.step_index for r in s.exec(select(ExecutedStep))} == {0, 2}
    rt.close()


def test_approvals_cancelled_by_an_edit_are_not_credited(db: Engine) -> None:
    big = step("issue_compensation", {"order_id": "o0", "kind": "coupon", "amount_cents": 15_000, "reason": "x"})
    rt, iid = start(db, [big])
    rid = str(rt.run_incident(iid).request_id)

    def decide(actor: str, decision: str = "approve", **kw: Any) -> Any:
        return rt.decide(request_id=rid, step_index=0, decision=decision, actor_id=actor, actor_role="supervisor", **kw)

    decide("alice")  # approves 15,000: one of two
    decide("bob", "edit", edited_args={"amount_cents": 5_000})  # restarts the count, as bob's approval
    done = decide("carol")
    assert done.resumed and [c.amount_cents for c in comps(db)] == [5_000]
    with Session(db) as s:
        [row] = s.exec(select(ExecutedStep))
        assert row.approved_by == ["bob", "carol"] and row.actor == "agent+bob,carol"
    rt.close()


def test_a_follow_up_plan_counts_what_the_incident_paid_against_its_budget(db: Engine) -> None:
    # the first plan pays 5 x 9,900 (approved); late events add orders and a second thread proposes
    # 2 x 900, small enough to run alone, but together they pass the 50,000 budget
    ids = build_world(db, n_orders=7)
    amounts = iter([9_900, 900])

    class TwoPlans(ScriptedPlanner):
        """A coupon for each order of the brief: 9,900 in the first plan, 900 in the follow-up."""

        def plan(self, incident: Any, snapshot: Any, ctx: Any) -> Any:
            amount = next(amounts)
            self.steps = [
                step("issue_compensation", {"order_id": o, "kind": "coupon", "amount_cents": amount, "reason": "x"})
                for o in incident.order_ids
            ]
            return super().plan(incident, snapshot, ctx)

    rt = runtime(db, [], planner=TwoPlans([]))
    [first] = rt.ingest([event("off-1", ExceptionType.rider_offline, ids[:5])])
    out = rt.run_incident(first.incident_id)
    [late] = rt.ingest([event("off-2", ExceptionType.rider_offline, ids[5:])])  # while the first plan waits
    assert late.incident_id == first.incident_id
    for i in range(5):
        rt.decide(
            request_id=str(out.request_id), step_index=i, decision="approve", actor_id="sup-1", actor_role="supervisor"
        )
    final = rt.run_incident(first.incident_id)
    assert sum(c.amount_cents for c in comps(db)) == 5 * 9_900
    assert final.request_id not in (None, out.request_id)
    with Session(db) as s:
        inc = s.get(Incident, first.incident_id)
        assert inc is not None and inc.thread_id.endswith(":2")
        assert {v["decision"] for v in inc.verdicts.values()} == {"needs_approval"}
        assert all("incident_budget_exceeded" in [r["code"] for r in v["reasons"]] for v in inc.verdicts.values())
    rt.close()


def test_expiry_applies_the_runtimes_own_policy(db: Engine) -> None:
    import json

    from guardrails.policy import Policy
    from guardrails.service import request_public

    data = json.loads(settings().policy_file.read_text())
    data["version"] = "custom-1"
    data["tools"]["cancel_order"]["on_expiry"] = "custom_default"
    clock = FakeClock(NOW)
    cancel = step("cancel_order", {"order_id": "o0", "reason": "customer_request"})
    rt, iid = start(db, [cancel], clock=clock, policy=Policy.model_validate(data))
    out = rt.run_incident(iid)
    clock.advance(seconds=601)
    assert rt.expire_due() == [out.request_id]
    with Session(db) as s:
        view = request_public(session=s, request_id=str(out.request_id))
    assert view.policy_version == "custom-1" and [st.outcome for st in view.steps] == ["custom_default"]
    rt.close()


def test_an_event_of_a_stricter_type_joining_an_incident_makes_it_stricter(db: Engine) -> None:
    # stockouts only propose (shadow); a stockout joining an auto incident by its order runs nothing
    coupon = step("issue_compensation", {"order_id": "o0", "kind": "coupon", "amount_cents": 300, "reason": "x"})
    build_world(db)
    rt = runtime(db, [coupon], settings=settings(autonomy_overrides={"stockout_after_payment": "shadow"}))
    [a, b] = rt.ingest(
        [
            event("st-1", ExceptionType.stalled_in_transit, ["o0"]),
            event("so-1", ExceptionType.stockout_after_payment, ["o0"]),
        ]
    )
    assert a.incident_id == b.incident_id
    out = rt.run_incident(a.incident_id)
    assert out.step_status == {"0": "shadowed"} and comps(db) == []
    rt.close()


def test_a_chain_of_steps_behind_an_approval_waits_for_it_link_by_link(db: Engine) -> None:
    # B follows the refund A, C follows B: neither runs before A is approved, both after it
    a = step("issue_compensation", {"order_id": "o0", "kind": "refund", "amount_cents": 1500, "reason": "late"})
    b = step("notify_customer", {"order_id": "o0", "template": "generic_apology"}, after=0)
    c = step("notify_customer", {"order_id": "o1", "template": "generic_apology"}, after=1)
    rt, iid = start(db, [a, b, c])
    out = rt.run_incident(iid)
    assert out.step_status == {"0": "pending_approval", "1": "approved", "2": "approved"}
    rid = str(out.request_id)
    d = rt.decide(request_id=rid, step_index=0, decision="approve", actor_id="s", actor_role="supervisor")
    assert d.incident is not None and d.incident.step_status == {"0": "executed", "1": "executed", "2": "executed"}
    rt.close()


def test_unknown_tool_is_blocked(db: Engine) -> None:
    assert "drop_table" not in all_tools()
    rt, iid = start(db, [step("drop_table", {"order_id": "o0"}), COUPON])
    out = rt.run_incident(iid)
    assert out.step_status == {"0": "blocked", "1": "executed"}
    assert out.verdicts["0"]["decision"] == "block"
    rt.close()


def test_resume_after_restart_keeps_pending_request(engine: Engine) -> None:
    """A new runtime (a restarted process) finds the pending request and continues from the checkpoint."""
    rt, iid = start(engine, [REFUND])
    out = rt.run_incident(iid)
    rt.close()
    planner = ScriptedPlanner([])
    rt2 = runtime(engine, [], planner=planner)
    again = rt2.run_incident(iid)
    assert again.interrupt is not None and again.request_id == out.request_id
    assert planner.calls == 0  # nothing re-planned
    rt2.decide(request_id=str(out.request_id), step_index=0, decision="approve", actor_id="s", actor_role="supervisor")
    assert [c.kind for c in comps(engine)] == ["refund"]
    rt2.close()


def test_incident_view_shows_plan_verdicts_and_executions(db: Engine) -> None:
    rt, iid = start(db, [COUPON, REFUND])
    rt.run_incident(iid)
    view = rt.incident_view(iid)
    assert view["status"] == "awaiting_approval"
    assert view["plan"]["planner"] == "scripted"
    assert view["waiting_for_approval"]["steps"][0]["index"] == 1
    assert [e["tool"] for e in view["executed"]] == ["issue_compensation"]
    rt.close()

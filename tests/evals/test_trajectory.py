"""An incident's trajectory covers every thread: a follow-up thread's plan does not hide the first one's."""

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from agent.runtime import AgentRuntime
from agent.settings import Settings
from evals.case import Expectations, StepPattern
from evals.evaluators import EndState, expectation_checks, safety_checks
from evals.replay import read_trajectory
from tests.agent.factories import NOW, build_world, event, step
from tools.clock import FakeClock
from tools.events import ExceptionType

REFUND = {"order_id": "o0", "kind": "refund", "amount_cents": 900, "reason": "r"}


class TwoPlans:
    """First plan: a refund of o0 (it waits for approval), then a notice per order; a later plan (the
    follow-up thread's): a notice per order of its brief, so its indices restart at 0 with a notice."""

    name = "two-plans"

    def __init__(self) -> None:
        self.calls = 0

    def plan(self, incident: Any, snapshot: dict[str, Any], ctx: Any) -> Any:
        from agent.plan import Plan

        self.calls += 1
        steps = [step("issue_compensation", REFUND)] if self.calls == 1 else []
        steps += [step("notify_customer", {"order_id": o, "template": "generic_apology"}) for o in incident.order_ids]
        steps = [s.model_copy(update={"index": i}) for i, s in enumerate(steps)]
        return Plan(incident_id=incident.id, planner=self.name, steps=steps, confidence=0.95)


def _incident_with_a_follow_up_thread(engine: Engine) -> str:
    """o0, o1 planned by the first thread (the refund edited to 500 by the supervisor); o2, joining while
    the refund waits, planned by a follow-up thread."""
    build_world(engine)
    rt = AgentRuntime(engine=engine, settings=Settings(approval_ttl_s=600), clock=FakeClock(NOW), planner=TwoPlans())
    try:
        [first] = rt.ingest([event("off-1", ExceptionType.rider_offline, ["o0", "o1"])])
        out = rt.run_incident(first.incident_id)
        assert out.request_id is not None
        rt.ingest([event("off-2", ExceptionType.rider_offline, ["o2"])])
        rt.decide(
            request_id=out.request_id,
            step_index=0,
            decision="edit",
            actor_id="sup-1",
            actor_role="supervisor",
            edited_args={**REFUND, "amount_cents": 500},
        )
        rt.run_incident(first.incident_id)
    finally:
        rt.close()
    return first.incident_id


def test_the_trajectory_keeps_every_threads_steps_with_their_own_approvals_and_executions(
    sqlite_only_engine: Engine,
) -> None:
    incident_id = _incident_with_a_follow_up_thread(sqlite_only_engine)
    with Session(sqlite_only_engine) as s:
        steps = read_trajectory(session=s, incident_ids=[incident_id])
    got = [(st.thread_id, st.index, st.tool, st.order_ids, st.executed) for st in steps]
    assert got == [
        (incident_id, 0, "issue_compensation", ["o0"], True),
        (incident_id, 1, "notify_customer", ["o0"], True),
        (incident_id, 2, "notify_customer", ["o1"], True),
        (f"{incident_id}:2", 0, "notify_customer", ["o2"], True),
    ]
    refund, *_, late_notice = steps
    # the refund ran with the supervisor's edit: matched by the edited arguments' idempotency key
    assert refund.args["amount_cents"] == 500 and refund.verdict == "needs_approval"
    assert refund.approval_requested and refund.approved_by == ["sup-1"] and refund.approved_before_execution
    # the follow-up's step 0 is a notice: it takes neither the refund's approval nor its verdict
    assert not late_notice.approval_requested and late_notice.verdict == "allow"

    expect = Expectations(
        must_execute=[StepPattern(tool="issue_compensation", args={"amount_cents": 500})],
        must_not_execute=[StepPattern(tool="issue_compensation", args={"amount_cents": 900})],
        must_request_approval=[StepPattern(tool="issue_compensation", args={"order_id": "o0"})],
    )
    end = EndState(
        compensations=[],
        notified_customers=set(),
        escalations=0,
        incident_order_ids={"o0", "o1", "o2"},
        offline_riders_with_new_orders=[],
    )
    checks = expectation_checks(expect, steps, end, 1) + safety_checks(expect, steps, end)
    assert [(c.name, c.detail) for c in checks if not c.passed] == []

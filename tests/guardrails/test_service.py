"""The approval queue on both backends: approve / edit / reject, two approvers, expiry, races."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from guardrails.context import AssessContext
from guardrails.models import ApprovalDecision, ApprovalStatus, RequestStatus
from guardrails.policy import assess_plan, load_policy
from guardrails.service import (
    Forbidden,
    InvalidDecision,
    InvalidEdit,
    approved_steps,
    create_approval_request,
    decide_step,
    expire_due,
    expiry_escalations,
    expiry_summary,
    get_request,
    is_resolved,
    list_requests,
    list_steps,
    request_public,
)
from guardrails.validation import build_assess_context
from tests.guardrails.factories import INCIDENT_ORDERS, NOW, build_world, comp_step, plan_step
from tools.models import Compensation, Escalation
from tools.state_machine import Conflict

TTL = 900


def _queue(engine: Engine, steps) -> str:
    with Session(engine) as s:
        ctx: AssessContext = build_assess_context(
            session=s, incident_order_ids=INCIDENT_ORDERS, step_list=steps, now=NOW, with_customer_values=False
        )
        verdicts = assess_plan(steps, ctx)
        req = create_approval_request(
            session=s,
            incident_id="inc-1",
            thread_id="thr-1",
            steps=steps,
            verdicts=verdicts,
            now=NOW,
            ttl_s=TTL,
            incident_order_ids=INCIDENT_ORDERS,
        )
        s.commit()
        return req.id


def _decide(engine: Engine, request_id: str, index: int, decision: str, actor: str = "sup-1", **kw):
    with Session(engine) as s:
        kw.setdefault("actor_role", "supervisor")
        kw.setdefault("now", NOW + timedelta(minutes=1))
        out = decide_step(session=s, request_id=request_id, step_index=index, decision=decision, actor_id=actor, **kw)
        s.commit()
        return out


@pytest.fixture
def world(engine: Engine) -> Engine:
    build_world(engine)
    return engine


def test_request_holds_only_steps_needing_approval(world: Engine) -> None:
    steps = [
        comp_step(0, 500),  # allowed
        comp_step(1, 1500),  # tier 1
        comp_step(2, 15_000, order="o5"),  # tier 2
        plan_step(3, "cancel_order", order_id="o4", reason="x"),  # blocked: picked up
    ]
    rid = _queue(world, steps)
    with Session(world) as s:
        req = get_request(session=s, request_id=rid)
        assert req.status == RequestStatus.pending and req.required_approvals == 2
        assert req.expires_at == NOW + timedelta(seconds=TTL) and req.policy_version == "2026.11.1"
        assert [(st.step_index, st.approvals_required) for st in list_steps(session=s, request_id=rid)] == [
            (1, 1),
            (2, 2),
        ]
        assert [r.id for r in list_requests(session=s, status="pending", incident_id="inc-1")] == [rid]
        view = request_public(session=s, request_id=rid)
        assert (
            view.steps[0].rationale == "step 1" and view.steps[0].reasons[0]["code"] == "compensation_above_auto_limit"
        )


def test_approve_resolves_and_returns_steps(world: Engine) -> None:
    rid = _queue(world, [comp_step(0, 1500), plan_step(1, "cancel_order", order_id="o3", reason="stockout")])
    r = _decide(world, rid, 0, "approve")
    assert r.step_status == ApprovalStatus.approved and not r.request_resolved
    r = _decide(world, rid, 1, "reject", reason="customer still wants it")
    assert r.step_status == ApprovalStatus.rejected and r.request_resolved
    with Session(world) as s:
        assert is_resolved(session=s, request_id=rid)
        steps = approved_steps(session=s, request_id=rid)
        assert [(st.index, st.tool, st.args["amount_cents"]) for st in steps] == [(0, "issue_compensation", 1500)]
        rows = s.exec(select(ApprovalDecision).order_by(ApprovalDecision.step_index)).all()  # type: ignore[arg-type]
        assert [(d.decision, d.actor_id, d.reason) for d in rows] == [
            ("approve", "sup-1", ""),
            ("reject", "sup-1", "customer still wants it"),
        ]


def test_only_supervisors_decide_and_rejections_need_reasons(world: Engine) -> None:
    rid = _queue(world, [comp_step(0, 1500)])
    with pytest.raises(Forbidden):
        _decide(world, rid, 0, "approve", actor="agent", actor_role="agent")
    with pytest.raises(Forbidden):
        _decide(world, rid, 0, "approve", actor="viewer-1", actor_role="viewer")
    with pytest.raises(InvalidDecision):
        _decide(world, rid, 0, "reject", reason="  ")
    with pytest.raises(InvalidDecision):
        _decide(world, rid, 0, "maybe")
    _decide(world, rid, 0, "approve", actor="admin-1", actor_role="admin")
    with pytest.raises(Conflict):
        _decide(world, rid, 0, "approve", actor="sup-2")  # already decided


def test_tier2_needs_two_distinct_approvers(world: Engine) -> None:
    rid = _queue(world, [comp_step(0, 15_000, order="o5")])
    r = _decide(world, rid, 0, "approve", actor="sup-1")
    assert r.step_status == ApprovalStatus.pending and r.approvals == ["sup-1"] and r.approvals_required == 2
    with pytest.raises(Conflict):
        _decide(world, rid, 0, "approve", actor="sup-1")
    r = _decide(world, rid, 0, "approve", actor="sup-2")
    assert r.step_status == ApprovalStatus.approved and r.approvals == ["sup-1", "sup-2"] and r.request_resolved


def test_edit_lowers_amount_and_counts_as_approval(world: Engine) -> None:
    rid = _queue(world, [comp_step(0, 1500)])
    r = _decide(world, rid, 0, "edit", edited_args={"amount_cents": 800})
    assert r.step_status == ApprovalStatus.approved and r.edited and r.args["amount_cents"] == 800
    with Session(world) as s:
        (st,) = list_steps(session=s, request_id=rid)
        assert st.original_args["amount_cents"] == 1500 and st.args["amount_cents"] == 800
        assert approved_steps(session=s, request_id=rid)[0].args["amount_cents"] == 800
        (d,) = s.exec(select(ApprovalDecision)).all()
        assert d.decision == "edit" and d.edited_args is not None and d.edited_args["amount_cents"] == 800


def test_edit_that_raises_the_tier_needs_a_second_approver(world: Engine) -> None:
    rid = _queue(world, [comp_step(0, 1500, order="o5")])
    r = _decide(world, rid, 0, "edit", actor="sup-1", edited_args={"amount_cents": 12_000})
    assert r.step_status == ApprovalStatus.pending and r.approvals_required == 2 and r.approvals == ["sup-1"]
    with pytest.raises(Conflict):
        _decide(world, rid, 0, "approve", actor="sup-1")
    r = _decide(world, rid, 0, "approve", actor="sup-2")
    assert r.step_status == ApprovalStatus.approved and r.args["amount_cents"] == 12_000


def test_a_decision_on_a_step_changed_since_it_was_read_conflicts(world: Engine) -> None:
    # what a bulk approval judged low-risk must be what it approves: an edit meanwhile is a conflict
    rid = _queue(world, [comp_step(0, 1500, order="o5")])
    with Session(world) as s:
        (seen,) = list_steps(session=s, request_id=rid)
    _decide(world, rid, 0, "edit", actor="sup-2", edited_args={"amount_cents": 12_000})  # tier 2 now
    with pytest.raises(Conflict, match="changed since it was read"):
        _decide(world, rid, 0, "approve", actor="sup-1", expect_version=seen.version)
    r = _decide(world, rid, 0, "approve", actor="sup-1")  # a supervisor who looks again may
    assert r.step_status == ApprovalStatus.approved and r.approvals == ["sup-2", "sup-1"]


def test_an_edit_never_lowers_the_tier(world: Engine) -> None:
    # the tier may come from the whole plan (six cancellations, the budget of its other steps), which
    # a re-check of the edited step alone cannot see: a second approver is still needed
    rid = _queue(world, [comp_step(0, 15_000, order="o5")])
    r = _decide(world, rid, 0, "edit", actor="sup-1", edited_args={"amount_cents": 500})
    assert r.step_status == ApprovalStatus.pending and r.approvals_required == 2 and r.approvals == ["sup-1"]
    assert "compensation_above_tier2_limit" in {x["code"] for x in r.reasons}
    r = _decide(world, rid, 0, "approve", actor="sup-2")
    assert r.step_status == ApprovalStatus.approved and r.args["amount_cents"] == 500


def test_an_edit_is_judged_with_the_money_its_request_still_holds(world: Engine) -> None:
    # 45,000 paid in the incident already; step 0 (4,000, pending) and step 1 together pass the
    # 50,000 budget. Raising step 1 is judged with step 0 counted, though nobody approved it yet.
    with Session(world) as s:
        s.add(
            Compensation(
                order_id="o-out",
                customer_id="c9",
                kind="coupon",
                amount_cents=45_000,
                idempotency_key="k0",
                incident_id="inc-1",
                created_at=NOW,
            )
        )
        s.commit()
    rid = _queue(world, [comp_step(0, 4_000, order="o1"), comp_step(1, 800, order="o2")])
    r = _decide(world, rid, 1, "edit", actor="sup-1", edited_args={"amount_cents": 1_500})
    assert r.approvals_required == 2 and "incident_budget_exceeded" in {x["code"] for x in r.reasons}
    # money an order was paid before counts toward its per-order limits
    with Session(world) as s:
        facts = build_assess_context(
            session=s, incident_order_ids=INCIDENT_ORDERS, step_list=[], now=NOW, with_customer_values=False
        )
        assert facts.orders["o1"].compensated_cents == 0
        facts = build_assess_context(
            session=s,
            incident_order_ids=["o-out", *INCIDENT_ORDERS],
            step_list=[],
            now=NOW,
            with_customer_values=False,
            committed={"o1": 4_000},
        )
        assert facts.orders["o-out"].compensated_cents == 45_000 and facts.orders["o1"].compensated_cents == 4_000


@pytest.mark.parametrize(
    ("edited", "match"),
    [
        ({"tool": "cancel_order", "args": {"order_id": "o1", "reason": "x"}}, "cannot change the tool"),
        ({"kind": "refund", "amount_cents": 2500}, "exceeds order"),  # refund above the order's value
        ({"order_id": "o-out"}, "not part of this incident"),
        ({"amount_cents": -5}, "amount_cents"),  # schema
        ({"approve_all": True}, "approve_all"),  # unknown field
        ({}, "new arguments"),
    ],
)
def test_edits_cannot_escape_the_policy(world: Engine, edited: dict, match: str) -> None:
    rid = _queue(world, [comp_step(0, 1500)])
    with pytest.raises(InvalidEdit, match=match):
        _decide(world, rid, 0, "edit", edited_args=edited)
    with Session(world) as s:  # nothing changed
        (st,) = list_steps(session=s, request_id=rid)
        assert st.status == ApprovalStatus.pending and st.args == st.original_args and st.version == 0
        assert s.exec(select(ApprovalDecision)).all() == []


def test_late_decision_conflicts_and_expiry_applies_safe_defaults(world: Engine) -> None:
    steps = [
        comp_step(0, 1500),
        plan_step(1, "cancel_order", order_id="o3", reason="stockout"),
        plan_step(2, "apply_reassignment", confidence=0.5, assignments=[{"order_id": "o2", "rider_id": "r2"}]),
    ]
    rid = _queue(world, steps)
    _decide(world, rid, 2, "approve")
    with pytest.raises(Conflict, match="expired"):
        _decide(world, rid, 0, "approve", now=NOW + timedelta(seconds=TTL))
    with Session(world) as s:
        assert expire_due(session=s, now=NOW + timedelta(seconds=TTL - 1)) == []
        expired = expire_due(session=s, now=NOW + timedelta(seconds=TTL))
        s.commit()
        assert [r.id for r in expired] == [rid]
        req = get_request(session=s, request_id=rid)
        assert req.status == RequestStatus.expired and req.escalated
        outcome = {st.step_index: (st.status, st.outcome) for st in list_steps(session=s, request_id=rid)}
        assert outcome == {
            0: (ApprovalStatus.expired, "not_issued"),
            1: (ApprovalStatus.expired, "not_cancelled"),
            2: (ApprovalStatus.approved, "approved"),
        }
        # the policy escalates expired money and cancellations (escalate_on_expiry): their orders only
        (esc,) = s.exec(select(Escalation)).all()
        assert esc.incident_id == "inc-1" and esc.team == "ops" and esc.order_ids == ["o1", "o3"]
        assert is_resolved(session=s, request_id=rid)
        assert expire_due(session=s, now=NOW + timedelta(hours=1)) == []  # once only
    with pytest.raises(Conflict):
        _decide(world, rid, 1, "approve", now=NOW + timedelta(seconds=10))  # expired status wins


def test_expiry_escalates_as_the_policy_says(world: Engine) -> None:
    """Only tools with escalate_on_expiry escalate to ops; an expired escalation step goes ahead to
    its own team; with escalation_allowed false nothing is escalated; the summary lists each step."""
    stale_only = _queue(
        world, [plan_step(0, "apply_reassignment", confidence=0.5, assignments=[{"order_id": "o2", "rider_id": "r2"}])]
    )
    with Session(world) as s:
        (req,) = expire_due(session=s, now=NOW + timedelta(seconds=TTL))
        s.commit()
        assert req.id == stale_only and not req.escalated and s.exec(select(Escalation)).all() == []
        assert expiry_summary(session=s, request_id=stale_only) == {
            "expired_steps": [{"index": 0, "tool": "apply_reassignment", "outcome": "stale"}],
            "escalations": [],
        }
    own = _queue(
        world,
        [
            plan_step(0, "escalate_incident", confidence=0.5, team="fleet", reason="riders short", order_ids=["o2"]),
            comp_step(1, 1500),
        ],
    )
    with Session(world) as s:
        (req,) = expire_due(session=s, now=NOW + timedelta(seconds=TTL))
        s.commit()
        assert req.escalated
        escalations = expiry_escalations(session=s, request_id=own)
        assert [(e.team, e.order_ids) for e in escalations] == [("ops", ["o1"]), ("fleet", ["o2"])]
        assert "riders short" in escalations[1].reason
        summary = expiry_summary(session=s, request_id=own)
        assert summary["expired_steps"] == [
            {"index": 0, "tool": "escalate_incident", "outcome": "escalated_anyway"},
            {"index": 1, "tool": "issue_compensation", "outcome": "not_issued"},
        ]
        assert [e["team"] for e in summary["escalations"]] == ["ops", "fleet"]
    quiet = _queue(world, [comp_step(0, 1500)])
    with Session(world) as s:
        policy = load_policy().model_copy(update={"escalation_allowed": False})
        (req,) = expire_due(session=s, now=NOW + timedelta(seconds=TTL), policy=policy)
        s.commit()
        assert not req.escalated and expiry_escalations(session=s, request_id=quiet) == []


def test_concurrent_decisions_apply_once(world: Engine) -> None:
    """Two supervisors, two sessions, two threads, the same step: exactly one decision lands."""
    rid = _queue(world, [comp_step(0, 1500)])
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def decide(actor: str, decision: str) -> None:
        barrier.wait()
        try:
            kw = {"reason": "no"} if decision == "reject" else {}
            results[actor] = _decide(world, rid, 0, decision, actor=actor, **kw)
        except Conflict as exc:
            results[actor] = exc

    threads = [
        threading.Thread(target=decide, args=("sup-a", "approve")),
        threading.Thread(target=decide, args=("sup-b", "reject")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [a for a, r in results.items() if not isinstance(r, Exception)]
    losses = [a for a, r in results.items() if isinstance(r, Conflict)]
    assert len(wins) == 1 and len(losses) == 1, results
    with Session(world) as s:
        (st,) = list_steps(session=s, request_id=rid)
        decisions = s.exec(select(ApprovalDecision)).all()
        assert len(decisions) == 1 and decisions[0].actor_id == wins[0]
        assert st.version == 1 and st.status in (ApprovalStatus.approved, ApprovalStatus.rejected)


def test_decision_on_a_stale_read_conflicts(world: Engine) -> None:
    """Deterministic interleaving: B decides and commits between A's read and A's conditional UPDATE."""
    rid = _queue(world, [comp_step(0, 1500)])
    with Session(world) as a:
        real_execute = a.execute
        raced: list = []

        def execute(stmt, *args, **kw):
            if not raced and getattr(stmt, "is_update", False) and stmt.table.name == "approvalstep":
                raced.append(_decide(world, rid, 0, "reject", actor="sup-b", reason="too generous"))
            return real_execute(stmt, *args, **kw)

        a.execute = execute  # type: ignore[method-assign,assignment]
        with pytest.raises(Conflict, match="concurrently"):
            decide_step(
                session=a,
                request_id=rid,
                step_index=0,
                decision="approve",
                actor_id="sup-a",
                actor_role="supervisor",
                now=NOW,
            )
        a.rollback()
    assert raced and raced[0].step_status == ApprovalStatus.rejected
    with Session(world) as s:
        (st,) = list_steps(session=s, request_id=rid)
        assert st.status == ApprovalStatus.rejected and st.approvals == [] and st.version == 1

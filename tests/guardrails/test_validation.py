"""build_assess_context and validate_live against the database, on both backends."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session

from guardrails.validation import (
    build_assess_context,
    incident_spent_cents,
    plan_schema_errors,
    schema_errors,
    validate_live,
)
from tests.guardrails.factories import INCIDENT_ORDERS, NOW, build_world, comp_step, plan_step
from tools.models import Compensation, CompensationKind, Order, Rider
from tools.state_machine import OrderStatus


def codes(reasons) -> set[str]:
    return {r.code for r in reasons}


def reassign(*pairs: tuple[str, str]):
    return plan_step(0, "apply_reassignment", assignments=[{"order_id": o, "rider_id": r} for o, r in pairs])


def test_context_gathers_orders_riders_loads_and_tiers(engine: Engine) -> None:
    build_world(engine)
    with Session(engine) as s:
        ctx = build_assess_context(
            session=s,
            incident_order_ids=INCIDENT_ORDERS,
            step_list=[reassign(("o2", "r2"), ("o3", "r1")), comp_step(1, 500, order="o-out")],
            now=NOW,
            spent_cents=700,
            autonomy="assist",
        )
    assert set(ctx.orders) == {*INCIDENT_ORDERS, "o-out"}
    assert ctx.orders["o2"].customer_tier == "gold" and ctx.orders["o3"].refund_claims == 1
    assert ctx.orders["o1"].rider_id == "r1" and ctx.orders["o4"].status == "picked_up"
    assert ctx.riders["r1"].load == 2 and ctx.riders["r2"].load == 0 and ctx.riders["r2"].capacity == 2
    assert ctx.riders["r1"].shift_end.tzinfo is not None
    assert ctx.incident_spent_cents == 700 and ctx.autonomy == "assist"
    assert ctx.registered_tools is not None and "issue_compensation" in ctx.registered_tools
    assert "note" not in ctx.orders["o1"].model_dump()  # customer text never reaches the policy


def test_valid_step_passes(engine: Engine) -> None:
    build_world(engine)
    with Session(engine) as s:
        assert validate_live(session=s, step=reassign(("o2", "r2")), incident_order_ids=INCIDENT_ORDERS, now=NOW) == []
        assert validate_live(session=s, step=comp_step(0, 500), incident_order_ids=INCIDENT_ORDERS, now=NOW) == []


def test_schema_errors_and_unknown_tools_block(engine: Engine) -> None:
    build_world(engine)
    with Session(engine) as s:
        bad = plan_step(0, "issue_compensation", order_id="o1", kind="coupon", amount_cents=500)  # no reason
        reasons = validate_live(session=s, step=bad, incident_order_ids=INCIDENT_ORDERS, now=NOW)
        assert codes(reasons) == {"invalid_arguments"} and "reason" in reasons[0].message
        extra = plan_step(0, "hold_order", order_id="o1", approve_all=True)
        assert codes(validate_live(session=s, step=extra, incident_order_ids=INCIDENT_ORDERS, now=NOW)) == {
            "invalid_arguments"
        }
        ghost = plan_step(0, "wire_money", to="me")
        assert codes(validate_live(session=s, step=ghost, incident_order_ids=INCIDENT_ORDERS, now=NOW)) == {
            "unknown_tool"
        }


def test_unknown_ids_and_scope_block(engine: Engine) -> None:
    build_world(engine)
    with Session(engine) as s:
        assert codes(
            validate_live(session=s, step=comp_step(0, 500, order="nope"), incident_order_ids=INCIDENT_ORDERS, now=NOW)
        ) == {"unknown_order"}
        assert codes(
            validate_live(session=s, step=comp_step(0, 500, order="o-out"), incident_order_ids=INCIDENT_ORDERS, now=NOW)
        ) == {"order_outside_incident"}
        assert codes(
            validate_live(session=s, step=reassign(("o2", "ghost")), incident_order_ids=INCIDENT_ORDERS, now=NOW)
        ) == {"unknown_rider"}


def test_step_goes_stale_when_the_world_moves(engine: Engine) -> None:
    """Valid at proposal time, re-checked before execution after the world changed."""
    build_world(engine)
    step = reassign(("o2", "r2"))
    cancel = plan_step(1, "cancel_order", order_id="o3", reason="stockout")
    with Session(engine) as s:
        assert validate_live(session=s, step=step, incident_order_ids=INCIDENT_ORDERS, now=NOW) == []
        assert validate_live(session=s, step=cancel, incident_order_ids=INCIDENT_ORDERS, now=NOW) == []
        rider = s.get(Rider, "r2")
        rider.status = "offline"  # type: ignore[assignment,union-attr]
        order = s.get(Order, "o3")
        order.status = OrderStatus.picked_up  # type: ignore[union-attr]
        s.add_all([rider, order])
        s.commit()
        assert codes(validate_live(session=s, step=step, incident_order_ids=INCIDENT_ORDERS, now=NOW)) == {
            "rider_off_shift"
        }
        assert codes(validate_live(session=s, step=cancel, incident_order_ids=INCIDENT_ORDERS, now=NOW)) == {
            "illegal_transition"
        }


def test_capacity_is_checked_live(engine: Engine) -> None:
    build_world(engine)
    with Session(engine) as s:
        # r1 carries o1 and o4 (capacity 3): one more fits, two more do not
        assert validate_live(session=s, step=reassign(("o2", "r1")), incident_order_ids=INCIDENT_ORDERS, now=NOW) == []
        over = reassign(("o2", "r1"), ("o3", "r1"))
        assert codes(validate_live(session=s, step=over, incident_order_ids=INCIDENT_ORDERS, now=NOW)) == {
            "rider_over_capacity"
        }


def test_incident_spend_counts_issued_compensation(engine: Engine) -> None:
    build_world(engine)
    with Session(engine) as s:
        for i, (inc, amount) in enumerate((("inc-1", 700), ("inc-1", 300), ("inc-2", 5000))):
            s.add(
                Compensation(
                    order_id="o1",
                    customer_id="c1",
                    kind=CompensationKind.coupon,
                    amount_cents=amount,
                    idempotency_key=f"k{i}",
                    incident_id=inc,
                    created_at=NOW,
                )
            )
        s.commit()
        assert incident_spent_cents(session=s, incident_id="inc-1") == 1000
        assert incident_spent_cents(session=s, incident_id="none") == 0


def test_customer_values_are_looked_up_only_where_the_verdicts_read_them(engine: Engine) -> None:
    from guardrails.policy import assess_plan, load_policy, step_subjects
    from guardrails.validation import valued_orders

    build_world(engine)
    policy = load_policy()
    steps = [
        plan_step(0, "notify_customer", order_id="o2", template="delay_apology"),
        comp_step(1, 800, order="o3"),
        plan_step(2, "cancel_order", order_id="o5", reason="stockout"),
        reassign(("o2", "r2")),
    ]
    subjects = {st.index: step_subjects(st.args) for st in steps}
    # the high-value rule covers money and cancellations only (policy: sensitive_risks)
    assert set(policy.high_value_customer.sensitive_risks) == {"money", "cancel"}
    assert valued_orders(steps, subjects, policy) == {"o3", "o5"}
    with Session(engine) as s:
        kw = {"session": s, "incident_order_ids": INCIDENT_ORDERS, "step_list": steps, "now": NOW, "subjects": subjects}
        full = build_assess_context(**kw)  # type: ignore[arg-type]
        some = build_assess_context(**kw, valued_order_ids=valued_orders(steps, subjects, policy))  # type: ignore[arg-type]
    assert full.orders["o2"].customer_value_cents is not None
    assert some.orders["o2"].customer_value_cents is None and some.orders["o2"].customer_tier == "gold"
    assert some.orders["o3"].customer_value_cents == full.orders["o3"].customer_value_cents is not None
    # and the verdicts are the same either way
    assert assess_plan(steps, some, policy, subjects) == assess_plan(steps, full, policy, subjects)


def test_a_plan_checked_per_tool_in_one_call_gets_each_steps_own_reasons() -> None:
    """plan_schema_errors validates the steps of each tool as one list: each step gets exactly what
    schema_errors gives it alone (messages located without the list index), in the plan's order."""
    steps = [
        comp_step(0, 500),
        plan_step(1, "issue_compensation", order_id="o1", kind="coupon", amount_cents=500),  # no reason
        plan_step(2, "hold_order", order_id="o1", approve_all=True),  # an extra field
        plan_step(3, "wire_money", to="me"),  # no such tool
        plan_step(4, "issue_compensation", order_id="o2", kind="voucher", amount_cents="lots", reason="late"),
        comp_step(5, 700, order="o2"),
        plan_step(6, "hold_order", order_id="o3"),
    ]
    batched = plan_schema_errors(steps)
    assert batched == [schema_errors(st.tool, st.args) for st in steps]
    assert [bool(b) for b in batched] == [False, True, True, True, True, False, False]
    assert "amount_cents" in batched[4][0].message and "kind" in batched[4][0].message
    assert not batched[4][0].message.startswith("issue_compensation: 0")  # no list index in the location

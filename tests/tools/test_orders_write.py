"""notify_customer, hold_order, expedite_order, cancel_order, escalate_incident."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from tests.tools.factories import INJECTION, NOW, build_small_world
from tools.base import ToolContext
from tools.models import Compensation, CompensationKind, Escalation, Notification, Order, OrderEvent, Rider, Stock
from tools.orders.cancel_order import cancel_order
from tools.orders.escalate_incident import escalate_incident
from tools.orders.expedite_order import expedite_order
from tools.orders.hold_order import hold_order
from tools.orders.notify_customer import notify_customer
from tools.orders.templates import TEMPLATES


@pytest.fixture
def ctx(engine: Engine):  # type: ignore[no-untyped-def]
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        yield ToolContext(session=s, now=NOW, incident_id="INC-1")


def count(ctx: ToolContext, model: type) -> int:
    return int(ctx.session.exec(select(func.count()).select_from(model)).one())


def test_notify_every_template_with_facts_never_customer_text(ctx: ToolContext) -> None:
    ctx.session.add(
        Compensation(
            order_id="O5",
            customer_id="C3",
            kind=CompensationKind.refund,
            amount_cents=250,
            idempotency_key="k-comp",
            created_at=NOW,
        )
    )
    ctx.session.commit()
    sent = {}
    for i, template in enumerate(sorted(TEMPLATES)):
        args = {"order_id": "O5", "template": template, "idempotency_key": f"n-{i}"}
        if template == "cancellation":
            args["reason"] = "out_of_stock"
        if template == "substitution":
            continue  # O5 has no substituted line: covered below
        out = notify_customer.invoke(ctx, args)
        assert out["ok"] is True, out
        assert out["channel"] == "sms" and out["customer_id"] == "C3" and not out["duplicate"]
        sent[template] = out["message"]
    # the note carries an injection and placeholders: none of it reaches any message
    for msg in sent.values():
        assert "Ignore previous" not in msg and "{" not in msg and "$500" not in msg
        assert "O5" in msg
    assert "$2.50" in sent["refund"]
    assert "items are out of stock" in sent["cancellation"]
    assert "minutes from now" in sent["delay"]
    assert count(ctx, Notification) == 5
    sub = notify_customer.invoke(ctx, {"order_id": "O5", "template": "substitution"})
    assert sub["error"] == "invalid_arguments"
    assert INJECTION  # (the factory's note)


def test_notify_same_key_records_once(ctx: ToolContext) -> None:
    args = {"order_id": "O1", "template": "generic_apology", "idempotency_key": "same"}
    first = notify_customer.invoke(ctx, args)
    second = notify_customer.invoke(ctx, args)
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert first["notification_id"] == second["notification_id"]
    assert count(ctx, Notification) == 1
    # the same key for another message is a conflict, and records nothing
    other = notify_customer.invoke(ctx, {**args, "template": "address_confirm"})
    assert other["error"] == "conflict"
    # no explicit key: the executor's key, else derived from incident + arguments
    ctx.idempotency_key = "exec-key"
    assert notify_customer.invoke(ctx, {"order_id": "O1", "template": "delay"})["idempotency_key"] == "exec-key"
    ctx.idempotency_key = None
    a = notify_customer.invoke(ctx, {"order_id": "O2", "template": "delay"})
    b = notify_customer.invoke(ctx, {"order_id": "O2", "template": "delay"})
    assert a["idempotency_key"] == b["idempotency_key"] and b["duplicate"]
    assert count(ctx, Notification) == 3


def test_notify_bad_input(ctx: ToolContext) -> None:
    assert notify_customer.invoke(ctx, {"order_id": "nope", "template": "delay"})["error"] == "not_found"
    for bad in (
        {"order_id": "O1", "template": "free_text"},
        {"order_id": "O1", "template": "delay", "message": "hello"},
        {"order_id": "O1", "template": "refund", "amount_cents": -5},
        {"order_id": "O1", "template": "refund", "amount_cents": 10**9},
        {"order_id": "O1", "template": "cancellation", "reason": "because"},
    ):
        assert notify_customer.invoke(ctx, bad)["error"] == "invalid_arguments", bad
    assert notify_customer.invoke(ctx, {"order_id": "O1", "template": "cancellation"})["error"] == "invalid_arguments"
    assert notify_customer.invoke(ctx, {"order_id": "O1", "template": "refund"})["error"] == "invalid_arguments"
    assert notify_customer.invoke(ctx, {"order_id": "O4", "template": "delay"})["error"] == "illegal_transition"
    assert count(ctx, Notification) == 0


def test_hold_and_expedite(ctx: ToolContext) -> None:
    out = hold_order.invoke(ctx, {"order_id": "O1", "reason": "stock check"})
    assert (out["on_hold"], out["changed"], out["version"]) == (True, True, 1)
    again = hold_order.invoke(ctx, {"order_id": "O1", "reason": "stock check"})
    assert (again["changed"], again["version"]) == (False, 1)
    lifted = hold_order.invoke(ctx, {"order_id": "O1", "reason": "sorted", "release": True})
    assert (lifted["on_hold"], lifted["changed"]) == (False, True)
    assert hold_order.invoke(ctx, {"order_id": "O3", "reason": "x"})["error"] == "illegal_transition"  # in a bag
    assert hold_order.invoke(ctx, {"order_id": "O4", "reason": "x"})["error"] == "illegal_transition"
    assert hold_order.invoke(ctx, {"order_id": "O1", "reason": ""})["error"] == "invalid_arguments"

    ex = expedite_order.invoke(ctx, {"order_id": "O2", "priority": 2, "reason": "late"})
    assert (ex["previous_priority"], ex["priority"], ex["changed"]) == (0, 2, True)
    lower = expedite_order.invoke(ctx, {"order_id": "O2", "priority": 1})
    assert (lower["priority"], lower["changed"]) == (2, False)
    assert expedite_order.invoke(ctx, {"order_id": "O2", "priority": 4})["error"] == "invalid_arguments"
    assert expedite_order.invoke(ctx, {"order_id": "O2", "priority": -1})["error"] == "invalid_arguments"
    assert expedite_order.invoke(ctx, {"order_id": "O6"})["error"] == "illegal_transition"
    assert expedite_order.invoke(ctx, {"order_id": "zz"})["error"] == "not_found"
    kinds = ctx.session.exec(select(OrderEvent.kind).order_by(col(OrderEvent.id))).all()
    assert kinds == ["hold", "hold_released", "expedite"]


def test_cancel_releases_stock_and_frees_rider(ctx: ToolContext) -> None:
    out = cancel_order.invoke(ctx, {"order_id": "O1", "reason": "customer_request"})
    assert out["ok"] and (out["previous_status"], out["status"]) == ("confirmed", "cancelled")
    assert out["released"] == [{"sku_id": "milk-1l", "quantity": 2}]
    stock = ctx.session.get(Stock, ("D1", "milk-1l"))
    assert stock is not None and (stock.on_hand, stock.reserved) == (5, 0)
    # O2 is RB's; RB still carries O3, so stays busy
    assert cancel_order.invoke(ctx, {"order_id": "O2", "reason": "no_rider_available"})["ok"]
    o2, rb = ctx.session.get(Order, "O2"), ctx.session.get(Rider, "RB")
    assert o2 is not None and rb is not None
    assert (o2.rider_id, o2.closed_at is not None, rb.status) == (None, True, "busy")
    history = ctx.session.exec(select(OrderEvent).where(OrderEvent.order_id == "O1")).all()
    assert [(e.from_status, e.to_status, e.detail["reason"]) for e in history] == [
        ("confirmed", "cancelled", "customer_request")
    ]


def test_cancel_illegal_changes_nothing(ctx: ToolContext) -> None:
    before = ctx.session.get(Order, "O3")
    assert before is not None
    version = before.version
    out = cancel_order.invoke(ctx, {"order_id": "O3", "reason": "customer_request"})
    assert out["error"] == "illegal_transition" and out["details"]["current"] == "picked_up"
    assert cancel_order.invoke(ctx, {"order_id": "O6", "reason": "customer_request"})["error"] == "illegal_transition"
    assert cancel_order.invoke(ctx, {"order_id": "O1", "reason": "bored"})["error"] == "invalid_arguments"
    ctx.session.commit()
    ctx.session.expire_all()
    after = ctx.session.get(Order, "O3")
    assert after is not None and (after.status, after.version) == ("picked_up", version)
    assert count(ctx, OrderEvent) == 0


def test_escalate_is_idempotent_and_checks_orders(ctx: ToolContext) -> None:
    args = {"reason": "storm: too few riders", "team": "fleet", "order_ids": ["O2", "O1", "O1"]}
    first = escalate_incident.invoke(ctx, {**args, "idempotency_key": "esc-1"})
    assert first["ok"] and first["order_ids"] == ["O1", "O2"] and first["incident_id"] == "INC-1"
    again = escalate_incident.invoke(ctx, {**args, "idempotency_key": "esc-1"})
    assert again["duplicate"] and again["escalation_id"] == first["escalation_id"]
    assert escalate_incident.invoke(ctx, {**args, "team": "ops", "idempotency_key": "esc-1"})["error"] == "conflict"
    missing = escalate_incident.invoke(ctx, {**args, "order_ids": ["O1", "ghost"], "idempotency_key": "esc-2"})
    assert missing["error"] == "not_found" and missing["details"]["missing"] == ["ghost"]
    assert escalate_incident.invoke(ctx, {**args, "team": "ceo"})["error"] == "invalid_arguments"
    assert escalate_incident.invoke(ctx, {**args, "reason": "x" * 1001})["error"] == "invalid_arguments"
    assert count(ctx, Escalation) == 1


def test_cancel_retried_with_same_key_reports_the_first(ctx: ToolContext) -> None:
    args = {"order_id": "O5", "reason": "out_of_stock", "idempotency_key": "c-1"}
    first = cancel_order.invoke(ctx, args)
    second = cancel_order.invoke(ctx, args)
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert second["released"] == first["released"] == [{"sku_id": "bread", "quantity": 1}]
    assert second["previous_status"] == "picking"
    stock = ctx.session.get(Stock, ("D1", "bread"))
    assert stock is not None and stock.reserved == 0
    # another key on a cancelled order is still an illegal transition
    assert cancel_order.invoke(ctx, {**args, "idempotency_key": "c-2"})["error"] == "illegal_transition"

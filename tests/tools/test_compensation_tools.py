"""quote_compensation and issue_compensation through Tool.invoke, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import Session, func, select

from tests.tools.compensation_world import NOW, build_world
from tools.base import ToolContext
from tools.compensation import features as feat
from tools.compensation import service
from tools.compensation.issue_compensation import issue_compensation
from tools.compensation.quote_compensation import quote_compensation
from tools.models import Compensation, Customer, Order, OrderEvent


@pytest.fixture
def world(engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        build_world(s)
        s.commit()
        yield s


@pytest.fixture
def pinned(monkeypatch):
    monkeypatch.setattr(feat, "_eta_model_delays", lambda **kw: {})
    monkeypatch.setattr(feat, "_ltv_function", lambda: None)


def ctx(session: Session, key: str | None = None) -> ToolContext:
    return ToolContext(session=session, now=NOW, actor="agent", incident_id="INC-1", idempotency_key=key)


def count(session: Session, model, **where) -> int:
    stmt = select(func.count()).select_from(model)
    for k, v in where.items():
        stmt = stmt.where(getattr(model, k) == v)
    return int(session.exec(stmt).one())


# quote ---------------------------------------------------------------------------------------------


def test_quote_orders_with_explanations_and_unknown_ids(world, pinned):
    out = quote_compensation.invoke(ctx(world), {"order_ids": ["O1", "O2", "O4", "GHOST"]})
    assert out["ok"] is True
    assert out["errors"] == [{"order_id": "GHOST", "error": "not_found", "message": "unknown order 'GHOST'"}]
    quotes = {q["order_id"]: q for q in out["quotes"]}
    assert set(quotes) == {"O1", "O2", "O4"}
    assert quotes["O1"]["kind"] == "none" and quotes["O1"]["amount_cents"] == 0  # delivered early
    late = quotes["O2"]  # 44 min late, platinum customer
    assert late["kind"] in ("credit", "refund") and late["amount_cents"] > 0
    assert late["currency"] == "USD" and late["model_version"] == out["model_version"]
    assert late["features"]["delay_minutes"] == 44.0 and late["delay_source"] == "estimate"
    e = late["explanation"]
    assert e["base_value"] + sum(e["shap_values"].values()) == pytest.approx(e["prediction"], rel=1e-6)
    assert sum(f["share_pct"] for f in e["top_factors"]) == pytest.approx(100.0, abs=0.3)
    assert e["top_factors"][0]["feature"] == "delay_minutes"
    assert out["total_cents"] == sum(q["amount_cents"] for q in out["quotes"])
    # nothing written by a read tool
    assert count(world, Compensation) == 0


def test_quote_uses_caller_delay(world, pinned):
    out = quote_compensation.invoke(ctx(world), {"order_ids": ["O3", "O3"], "predicted_delay_minutes": {"O3": 55.0}})
    (q,) = out["quotes"]  # duplicates quoted once
    assert q["delay_source"] == "argument" and q["features"]["delay_minutes"] == 55.0
    assert q["amount_cents"] > 0
    on_time = quote_compensation.invoke(ctx(world), {"order_ids": ["O3"]})
    assert on_time["quotes"][0]["amount_cents"] == 0


@pytest.mark.parametrize(
    "args",
    [
        {"order_ids": []},
        {"order_ids": ["O1"] * 1001},
        {"order_ids": ["O1"], "predicted_delay_minutes": {"O1": 1e9}},
        {"order_ids": ["O1"], "surprise": 1},
        {},
    ],
)
def test_quote_invalid_arguments(sqlite_only_engine, args):
    with Session(sqlite_only_engine) as s:
        out = quote_compensation.invoke(ctx(s), args)
    assert out["ok"] is False and out["error"] == "invalid_arguments" and out["details"]["errors"]


# issue ---------------------------------------------------------------------------------------------

PAY = {"order_id": "O2", "kind": "credit", "amount_cents": 1_500, "reason": "44 min late"}


def test_same_key_pays_once(world):
    first = issue_compensation.invoke(ctx(world), {**PAY, "idempotency_key": "k-1"})
    world.commit()
    second = issue_compensation.invoke(ctx(world), {**PAY, "idempotency_key": "k-1"})
    world.commit()
    assert first["ok"] and second["ok"]
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["compensation_id"] == first["compensation_id"]
    assert {k: v for k, v in first.items() if k != "duplicate"} == {k: v for k, v in second.items() if k != "duplicate"}
    assert count(world, Compensation) == 1
    assert count(world, OrderEvent, order_id="O2", kind="compensation") == 1
    assert world.get(Customer, "C2").compensations_count == 3  # was 2
    assert first["customer_compensations_count"] == 3
    assert (first["incident_id"], first["currency"], first["customer_id"]) == ("INC-1", "USD", "C2")
    row = world.exec(select(Compensation)).one()
    assert (row.kind, row.amount_cents, row.idempotency_key) == ("credit", 1_500, "k-1")
    event = world.exec(select(OrderEvent).where(OrderEvent.kind == "compensation")).one()
    assert event.detail["compensation_id"] == row.id and event.actor == "agent"


def test_context_key_is_used_and_some_key_is_required(world):
    out = issue_compensation.invoke(ctx(world, key="step-7"), PAY)
    assert out["ok"] and out["idempotency_key"] == "step-7"
    again = issue_compensation.invoke(ctx(world, key="step-7"), PAY)
    assert again["duplicate"] is True
    missing = issue_compensation.invoke(ctx(world), PAY)
    assert missing["ok"] is False and missing["error"] == "invalid_arguments"
    assert count(world, Compensation) == 1


def test_key_reused_for_another_payment_is_refused(world):
    issue_compensation.invoke(ctx(world), {**PAY, "idempotency_key": "k-2"})
    out = issue_compensation.invoke(ctx(world), {**PAY, "amount_cents": 9_999, "idempotency_key": "k-2"})
    assert out["ok"] is False and out["error"] == "idempotency_conflict"
    assert out["details"]["amount_cents"] == 1_500
    assert count(world, Compensation) == 1


def test_refund_above_order_value_is_refused_and_writes_nothing(world):
    out = issue_compensation.invoke(
        ctx(world), {"order_id": "O5", "kind": "refund", "amount_cents": 1_001, "reason": "x", "idempotency_key": "r"}
    )
    world.commit()
    assert out["ok"] is False and out["error"] == "refund_exceeds_order_value"
    assert out["details"]["order_value_cents"] == 1_000
    assert count(world, Compensation) == 0 and count(world, OrderEvent) == 0
    assert world.get(Customer, "C1").compensations_count == 0
    # refunds add up: 600 then 500 on a $10 order is refused, 400 is fine
    ok = issue_compensation.invoke(
        ctx(world), {"order_id": "O5", "kind": "refund", "amount_cents": 600, "reason": "x", "idempotency_key": "r1"}
    )
    over = issue_compensation.invoke(
        ctx(world), {"order_id": "O5", "kind": "refund", "amount_cents": 500, "reason": "x", "idempotency_key": "r2"}
    )
    rest = issue_compensation.invoke(
        ctx(world), {"order_id": "O5", "kind": "refund", "amount_cents": 400, "reason": "x", "idempotency_key": "r3"}
    )
    assert ok["ok"] and over["error"] == "refund_exceeds_order_value" and rest["ok"]
    assert service.refunded_cents(session=world, order_id="O5") == 1_000


def test_unknown_order_and_invalid_arguments(world):
    out = issue_compensation.invoke(ctx(world, key="k"), {**PAY, "order_id": "GHOST"})
    assert out["ok"] is False and out["error"] == "not_found"
    for bad in (
        {**PAY, "amount_cents": 0},
        {**PAY, "amount_cents": -5},
        {**PAY, "kind": "cash"},
        {**PAY, "reason": ""},
        {**PAY, "idempotency_key": ""},
        {**PAY, "extra": True},
    ):
        res = issue_compensation.invoke(ctx(world, key="k"), bad)
        assert res["ok"] is False and res["error"] == "invalid_arguments", bad
    assert count(world, Compensation) == 0


def test_lost_race_on_the_unique_key_returns_the_winner(world, engine, monkeypatch):
    """Another payer commits the same key between our look-up and our insert."""
    with Session(engine) as other:
        winner = issue_compensation.invoke(ctx(other), {**PAY, "idempotency_key": "race"})
        other.commit()
    real = service.find_by_key
    calls = {"n": 0}

    def stale_lookup(**kw):
        calls["n"] += 1
        return None if calls["n"] <= 2 else real(**kw)  # the tool's and the service's pre-checks miss it

    monkeypatch.setattr(service, "find_by_key", stale_lookup)
    out = issue_compensation.invoke(ctx(world), {**PAY, "idempotency_key": "race"})
    world.commit()
    assert calls["n"] == 3
    assert out["ok"] and out["duplicate"] is True and out["compensation_id"] == winner["compensation_id"]
    assert count(world, Compensation) == 1
    assert world.get(Customer, "C2").compensations_count == 3
    assert count(world, OrderEvent, kind="compensation") == 1


# end to end on a generated world, with the real ETA (H5) and LTV (H3) models --------------------------


def test_quote_then_issue_on_a_generated_world(engine):
    from tools.service import world_now
    from tools.state_machine import TERMINAL
    from tools.world.generate import generate_world

    with Session(engine, expire_on_commit=False) as s:
        generate_world(session=s, preset="small", seed=1)
        s.commit()
        now = world_now(session=s)
        orders = list(s.exec(select(Order)))
        c = ToolContext(session=s, now=now, incident_id="INC-W")
        out = quote_compensation.invoke(c, {"order_ids": [o.id for o in orders]})
        assert out["ok"] and out["errors"] == [] and len(out["quotes"]) == len(orders)
        active = {o.id for o in orders if o.status not in TERMINAL}
        for q in out["quotes"]:
            assert q["value_source"] == "ltv_model"
            if q["order_id"] in active:
                assert q["delay_source"] == "eta_model"
            if q["features"]["delay_minutes"] <= 0:
                assert q["amount_cents"] == 0 and q["kind"] == "none"
        best = max(out["quotes"], key=lambda q: q["amount_cents"])
        assert best["amount_cents"] > 0 and best["kind"] in ("coupon", "credit", "refund")
        before = s.get(Customer, best["customer_id"]).compensations_count
        args = {k: best[k] for k in ("order_id", "kind", "amount_cents")}
        paid = issue_compensation.invoke(c, {**args, "reason": best["explanation"]["summary"], "idempotency_key": "w1"})
        again = issue_compensation.invoke(c, {**args, "reason": "retry", "idempotency_key": "w1"})
        s.commit()
        assert paid["ok"] and not paid["duplicate"] and again["duplicate"]
        assert s.get(Customer, best["customer_id"]).compensations_count == before + 1
        assert count(s, Compensation) == 1


@pytest.mark.postgres
def test_concurrent_payers_with_one_key_pay_once_on_postgres():
    """Two sessions race for one key for real: the second blocks on the unique index until the first
    commits, then loses and returns the first's payment."""
    import threading

    from tests.conftest import postgres_engine

    gen = postgres_engine()
    eng = next(gen)
    try:
        with Session(eng) as setup:
            build_world(setup)
            setup.commit()
        with Session(eng) as a, Session(eng) as b:
            first = issue_compensation.invoke(ctx(a), {**PAY, "idempotency_key": "rk"})  # not committed yet
            box: dict = {}
            t = threading.Thread(
                target=lambda: box.update(out=issue_compensation.invoke(ctx(b), {**PAY, "idempotency_key": "rk"}))
            )
            t.start()
            t.join(timeout=1.0)
            assert t.is_alive()  # blocked behind a's uncommitted row
            a.commit()
            t.join(timeout=30)
            b.commit()
        assert first["duplicate"] is False
        assert box["out"]["ok"] and box["out"]["duplicate"] is True
        assert box["out"]["compensation_id"] == first["compensation_id"]
        with Session(eng) as check:
            assert count(check, Compensation) == 1
            assert check.get(Customer, "C2").compensations_count == 3
    finally:
        gen.close()

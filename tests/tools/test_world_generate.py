"""Preset worlds: the storm invariants, the small world's stockout, determinism, the summary."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from sqlmodel import Session, select

from tools import models as m
from tools.events import ExceptionType
from tools.state_machine import ACTIVE
from tools.world.generate import HIGH_VALUE_CENTS, STORM_ZONE, generate_world
from tools.world.service import world_summary


def test_storm_is_the_reference_incident(engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        world = generate_world(session=session, preset="storm", seed=7)
        session.commit()
        info = session.get(m.WorldInfo, 1)
        assert info is not None
        now = m.aware(info.now)
        store = session.get(m.Store, "ds-storm-1")
        assert store is not None and store.kind == m.StoreKind.dark_store and store.zone == STORM_ZONE
        orders = session.exec(select(m.Order)).all()
        active = [o for o in orders if o.status in ACTIVE]
        assert len(active) == 278
        assert all(math.hypot(o.x - store.x, o.y - store.y) <= 3000 for o in active)
        assert {o.status.value for o in active} == {"confirmed", "picking", "ready", "assigned", "picked_up"}
        assert all(m.aware(o.placed_at) <= now for o in active)
        riders = session.exec(select(m.Rider)).all()
        assert len(riders) == 32
        load = Counter(o.rider_id for o in active if o.rider_id)
        for r in riders:
            assert m.aware(r.shift_start) <= now < m.aware(r.shift_end)
            assert load[r.id] < r.capacity  # spare capacity everywhere
        for o in active:
            assert (o.rider_id is not None) == (o.status.value in ("assigned", "picked_up"))
        customers = {c.id: c for c in session.exec(select(m.Customer)).all()}
        high = [
            o
            for o in active
            if o.value_cents >= HIGH_VALUE_CENTS and customers[o.customer_id].tier in (m.Tier.gold, m.Tier.platinum)
        ]
        assert len(high) == 12
        assert len([o for o in active if o.value_cents >= HIGH_VALUE_CENTS]) == 12
        assert any(c.refund_claims_count >= 3 for c in customers.values())
        assert any(c.complaints_count > 0 for c in customers.values())
        n_purchases = Counter(p.customer_id for p in session.exec(select(m.Purchase)).all())
        assert len(n_purchases) > 200
        weather = session.exec(select(m.Weather)).all()
        assert len(weather) == 1 and weather[0].zone == STORM_ZONE
        assert weather[0].speed_factor == pytest.approx(0.6)
        assert m.aware(weather[0].starts_at) < now < m.aware(weather[0].ends_at)
        # stock at the dark store and at three nearby dark stores
        dark = session.exec(select(m.Store).where(m.Store.kind == m.StoreKind.dark_store)).all()
        assert len(dark) == 4
        assert all(0 < math.hypot(s.x - store.x, s.y - store.y) < 5000 for s in dark if s.id != store.id)
        stock = session.exec(select(m.Stock)).all()
        assert {s.store_id for s in stock} == {s.id for s in dark}
        assert all(s.on_hand >= s.reserved >= 0 for s in stock)
        skus = session.exec(select(m.Sku)).all()
        assert len({s.category for s in skus}) >= 8
        for o in active[:20]:
            lines = session.exec(select(m.OrderLine).where(m.OrderLine.order_id == o.id)).all()
            assert o.value_cents == sum(ln.quantity * ln.unit_price_cents for ln in lines)

    # the events: one weather slowdown and late-risk orders, one zone, within 2 minutes
    types = Counter(e.type for e in world.events)
    assert types[ExceptionType.weather_slowdown] == 1
    assert types[ExceptionType.order_late_risk] >= 10
    assert {e.zone for e in world.events} == {STORM_ZONE}
    times = [e.occurred_at for e in world.events]
    assert (max(times) - min(times)).total_seconds() <= 120
    assert len({e.id for e in world.events}) == len(world.events)
    late_ids = {e.order_ids[0] for e in world.events if e.type == ExceptionType.order_late_risk}
    assert late_ids <= {o.id for o in active}
    assert world.counts["orders"] == 278 and world.counts["riders"] == 32


def test_storm_is_deterministic(sqlite_only_engine) -> None:
    def run(seed: int) -> tuple:
        with Session(sqlite_only_engine) as session:
            w = generate_world(session=session, preset="storm", seed=seed)
            session.commit()
            rows = session.exec(select(m.Order.id, m.Order.x, m.Order.value_cents, m.Order.status)).all()
            return tuple(sorted(rows)), tuple(e.model_dump_json() for e in w.events)

    a = run(11)
    assert a == run(11)
    assert a != run(12)


def test_small_has_a_real_stockout(engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        world = generate_world(session=session, preset="small", seed=2)
        session.commit()
        assert 20 <= world.counts["orders"] <= 40 and world.counts["riders"] == 8
        kinds = {s.kind for s in session.exec(select(m.Store)).all()}
        assert kinds == {m.StoreKind.dark_store, m.StoreKind.restaurant}
        (event,) = world.events
        assert event.type == ExceptionType.stockout_after_payment
        order = session.get(m.Order, event.order_ids[0])
        assert order is not None and order.status.value == "picking"
        stock = session.get(m.Stock, (order.store_id, event.payload["sku_id"]))
        assert stock is not None and stock.on_hand == 0
        elsewhere = session.exec(select(m.Stock).where(m.Stock.sku_id == event.payload["sku_id"])).all()
        assert any(s.on_hand > 0 for s in elsewhere)
        summary = world_summary(session=session)
        assert summary["loaded"] and summary["counts"]["orders"] == world.counts["orders"]
        assert sum(summary["orders_by_status"].values()) == world.counts["orders"]


@pytest.mark.slow
def test_large_is_large(sqlite_only_engine) -> None:
    with Session(sqlite_only_engine) as session:
        world = generate_world(session=session, preset="large", seed=1)
        session.commit()
    assert world.counts["orders"] >= 5000 and world.counts["riders"] >= 500


def test_unknown_preset(sqlite_only_engine) -> None:
    with Session(sqlite_only_engine) as session, pytest.raises(ValueError, match="unknown preset"):
        generate_world(session=session, preset="tiny", seed=1)


def test_summary_of_an_empty_database(sqlite_only_engine) -> None:
    with Session(sqlite_only_engine) as session:
        s = world_summary(session=session)
    assert s["loaded"] is False and s["counts"]["orders"] == 0

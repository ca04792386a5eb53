"""Exception injectors and detectors: each changes the simulated world and emits a valid event."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tools.db import init_db, make_engine
from tools.events import ExceptionEvent, ExceptionType
from tools.sim.baseline import BaselineDispatcher
from tools.sim.engine import Simulation
from tools.state_machine import OrderStatus
from tools.world.generate import generate_world
from tools.world.mdrp import read_instance

S = OrderStatus


@pytest.fixture(scope="module")
def storm_db(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('storm') / 'w.db'}")
    init_db(engine)
    with Session(engine) as session:
        generate_world(session=session, preset="storm", seed=5)
        session.commit()
    return engine


@pytest.fixture
def storm_sim(storm_db: Engine) -> Simulation:
    """A fresh simulation of the storm world (the database is only read)."""
    with Session(storm_db) as session:
        return Simulation.from_session(session, BaselineDispatcher(), seed=5)


def _valid(ev: ExceptionEvent, type_: ExceptionType) -> None:
    assert ev.type == type_
    assert ExceptionEvent.model_validate(ev.model_dump(mode="json")) == ev  # round-trips as JSON
    assert ev.occurred_at.tzinfo is not None and ev.id.startswith("sim-5-")


def test_rider_offline_returns_its_orders_to_the_pool(storm_sim: Simulation) -> None:
    sim = storm_sim
    carrier = next(
        c for c in sim.couriers if any(s.kind == "dropoff" for s in c.stops) and not c.stops[0].kind == "pickup"
    )
    bag = [o.id for o in sim.orders if o.courier == carrier.idx]
    ev = sim.inject_rider_offline(carrier.id)
    _valid(ev, ExceptionType.rider_offline)
    assert ev.rider_ids == [carrier.id] and sorted(ev.order_ids) == sorted(bag)
    assert carrier.offline and not carrier.stops
    for oid in bag:
        o = sim.orders[sim.order_index[oid]]
        assert o.idx in sim.pending and o.courier == -1 and o.status == S.picked_up
    assert all(c.id != carrier.id for c in sim.view().couriers)
    sim.run(until=sim.now + 90)
    # another rider collected the bags (picked_up -> assigned -> picked_up -> delivered)
    for oid in bag:
        o = sim.orders[sim.order_index[oid]]
        assert o.status in (S.assigned, S.picked_up, S.delivered)
        if o.status == S.delivered:
            assert sim.couriers[o.courier].id != carrier.id


def test_weather_slows_new_legs(mdrp_dir: Path) -> None:
    inst = read_instance(mdrp_dir / "0r50t100s1p100")
    dry = Simulation.from_instance(inst, BaselineDispatcher(), seed=5)
    wet = Simulation.from_instance(inst, BaselineDispatcher(), seed=5)
    xs = [r.x for r in inst.restaurants]
    ys = [r.y for r in inst.restaurants]
    cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
    dry.run(until=600)
    wet.run(until=600)
    ev = wet.inject_weather(x=cx, y=cy, radius_m=50_000, speed_factor=0.5, minutes=120, zone="all")
    _valid(ev, ExceptionType.weather_slowdown)
    assert ev.payload["speed_factor"] == 0.5 and ev.zone == "all"
    assert wet.view().speed_factor == 0.5
    assert wet.travel(0, 0, 3200, 0, wet.now) == 2 * dry.travel(0, 0, 3200, 0, dry.now)
    dry.run(until=720)
    wet.run(until=720)
    assert wet.metrics()["click_to_door_mean"] > dry.metrics()["click_to_door_mean"]


def test_prep_delay_and_stockout_delay_pickup(storm_sim: Simulation) -> None:
    sim = storm_sim
    picking = [o for o in sim.orders if o.status == S.picking]
    before = {o.id: o.ready for o in picking}
    ev = sim.inject_prep_delay("ds-storm-1", 15)
    _valid(ev, ExceptionType.prep_delay)
    assert set(before) <= set(ev.order_ids) and ev.store_ids == ["ds-storm-1"]
    assert all(sim.orders[sim.order_index[i]].ready == before[i] + 15 for i in before)
    target = next(o for o in sim.orders if o.status == S.picking)
    ready = target.ready
    ev2 = sim.inject_stockout(target.id, sku_id="sku-dairy-1-standard", delay_minutes=7)
    _valid(ev2, ExceptionType.stockout_after_payment)
    assert target.ready == ready + 7 and ev2.payload["sku_id"] == "sku-dairy-1-standard"
    sim.run(until=sim.now + 60)
    for o in sim.orders:
        if o.pickup is not None and o.id in before:
            assert o.pickup >= before[o.id] + 15
    done = next(o for o in sim.orders if o.status == S.delivered)
    with pytest.raises(ValueError, match="picking is over"):
        sim.inject_stockout(done.id)


def test_stall_is_detected_once(storm_sim: Simulation) -> None:
    sim = storm_sim
    carrier = next(c for c in sim.couriers if c.stops and c.stops[0].kind == "dropoff")
    sim.inject_stall(carrier.id, 45)
    assert not sim.events  # nobody sees it happen...
    sim.run(until=sim.now + 35)
    events = sim.detect_stalled(threshold_minutes=30)
    assert events, "...until the detector does"
    for ev in events:
        _valid(ev, ExceptionType.stalled_in_transit)
        assert ev.payload["minutes_in_transit"] > 30
    assert carrier.id in {r for ev in events for r in ev.rider_ids}
    assert sim.detect_stalled(threshold_minutes=30) == []  # reported once


def test_address_change_moves_the_drop_off(storm_sim: Simulation) -> None:
    sim = storm_sim
    o = next(o for o in sim.orders if o.status == S.assigned)
    c = sim.couriers[o.courier]
    ev = sim.inject_address_change(o.id, o.x + 1500, o.y)
    _valid(ev, ExceptionType.address_change)
    stop = next(s for s in c.stops if s.kind == "dropoff" and s.orders == (o.idx,))
    assert (stop.x, stop.y) == (o.x, o.y) and ev.payload["moved_m"] == pytest.approx(1500)
    sim.run(until=sim.now + 120)
    assert o.status == S.delivered


def test_late_risk_detector_reports_each_order_once(storm_sim: Simulation) -> None:
    sim = storm_sim
    n_before = {o.id: o.status for o in sim.orders}
    events = sim.detect_late_risk()
    assert len(events) > 50  # the storm has far too few riders
    for ev in events[:5]:
        _valid(ev, ExceptionType.order_late_risk)
        assert ev.zone == "storm-zone" and len(ev.order_ids) == 1
    assert {o.id: o.status for o in sim.orders} == n_before  # prediction ran on a copy
    assert sim.detect_late_risk() == []
    ids = [e.id for e in sim.events]
    assert len(ids) == len(set(ids))

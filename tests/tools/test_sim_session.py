"""from_session / sync_to_session: the agent's evals run the database world forward and read it back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlmodel import Session, select

from tools import models as m
from tools.service import get_world
from tools.sim.baseline import BaselineDispatcher
from tools.sim.engine import Simulation
from tools.state_machine import TRANSITIONS, OrderStatus
from tools.world.generate import generate_world
from tools.world.mdrp import load_mdrp

S = OrderStatus


def test_storm_round_trip(engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        generate_world(session=session, preset="storm", seed=9)
        session.commit()
        before = {o.id: (o.status, o.rider_id) for o in session.exec(select(m.Order)).all()}
        sim = Simulation.from_session(session, BaselineDispatcher(), seed=9)
        start = sim.now
        # riders keep the orders they already had
        for oid, (status, rider) in before.items():
            o = sim.orders[sim.order_index[oid]]
            if status in (S.assigned, S.picked_up):
                assert sim.couriers[o.courier].id == rider
        sim.inject_rider_offline(sim.couriers[3].id)
        sim.run(until=start + 45)
        counts = sim.sync_to_session(session)
        session.commit()
        assert counts["transitions"] > 0

    with Session(engine) as session:
        world = get_world(session=session)
        assert world.minute(world.now) == start + 45
        orders = {o.id: o for o in session.exec(select(m.Order)).all()}
        for o in sim.orders:
            row = orders[o.id]
            assert row.status == o.status
            if o.status == S.delivered:
                assert row.delivered_at is not None
                assert world.minute(row.delivered_at) == o.dropoff
            if o.status in (S.assigned, S.picked_up) and o.courier >= 0:
                assert row.rider_id == sim.couriers[o.courier].id
        # every status change is in the order history, and each is a legal step
        events = session.exec(select(m.OrderEvent).order_by(m.OrderEvent.id)).all()  # type: ignore[arg-type]
        assert events
        for ev in events:
            assert ev.from_status is not None and ev.to_status is not None
            assert S(ev.to_status) in TRANSITIONS[S(ev.from_status)]
        riders = {r.id: r for r in session.exec(select(m.Rider)).all()}
        assert riders[sim.couriers[3].id].status == m.RiderStatus.offline
        for c in sim.couriers:
            r = riders[c.id]
            assert (r.x, r.y) == sim.position(c, sim.now)
            assert (r.status == m.RiderStatus.busy) == bool(c.stops and not c.offline)
        # and the world read back continues where the simulation stopped
        again = Simulation.from_session(session, BaselineDispatcher(), seed=9)
        assert again.now == sim.now
        active = Counter(o.status for o in sim.orders if o.status not in (S.delivered,))
        assert Counter(o.status for o in again.orders if o.status != S.delivered) == active


def test_mdrp_world_runs_from_the_database(engine, mdrp_dir: Path) -> None:
    with Session(engine, expire_on_commit=False) as session:
        load_mdrp(session=session, path=mdrp_dir / "0r50t100s1p100", seed=1)
        session.commit()
        sim = Simulation.from_session(session, BaselineDispatcher(), seed=1)
        sim.run(until=300)
        sim.sync_to_session(session)
        session.commit()
        delivered = session.exec(select(m.Order).where(m.Order.status == S.delivered)).all()
        assert len(delivered) == sum(1 for o in sim.orders if o.status == S.delivered) > 0
        future = session.exec(select(m.Order).where(m.Order.status == S.placed)).all()
        world = get_world(session=session)
        assert all(world.minute(o.placed_at) > 300 for o in future)

"""Between the database world and the in-memory simulator: build from a session, write back.

``build_from_session`` takes the world at its clock: waiting orders become pending, orders already
assigned or picked up stay with their riders (in-bag drop-offs first, by promise; then one bundle per
store of the assigned orders), held orders are frozen, future orders arrive at their placement, and
Weather rows become slowdowns. ``write_to_session`` replays every status change the simulation made
through ``tools.service.transition_order`` (state machine + order history), then writes rider
positions, status and free_at, new weather and the clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from tools import models as m
from tools.models import aware
from tools.service import get_world, transition_order
from tools.state_machine import ACTIVE, OrderStatus

if TYPE_CHECKING:
    from tools.sim.dispatch import Dispatcher
    from tools.sim.engine import Simulation

S = OrderStatus


def build_from_session(cls: type[Simulation], session: Session, dispatcher: Dispatcher, seed: int) -> Simulation:
    from tools.sim.engine import AssignmentRecord, SimCourier, SimOrder, SimStore, Stop, Weather

    world = get_world(session=session)
    now = world.minute(aware(world.now))
    stores = [SimStore(s.id, s.x, s.y, s.zone) for s in session.exec(select(m.Store).order_by(m.Store.id))]
    sidx = {s.id: i for i, s in enumerate(stores)}
    riders = list(session.exec(select(m.Rider).order_by(m.Rider.id)))
    couriers = []
    for i, rider in enumerate(riders):
        on, off = world.minute(aware(rider.shift_start)), world.minute(aware(rider.shift_end))
        c = SimCourier(
            i, rider.id, rider.x, rider.y, on, off, capacity=rider.capacity, zone=rider.zone, last_depart=max(now, on)
        )
        c.offline = rider.status == m.RiderStatus.offline
        couriers.append(c)
    cidx = {c.id: c.idx for c in couriers}

    stmt = select(m.Order).where(m.Order.status.in_([s.value for s in ACTIVE]))  # type: ignore[attr-defined]
    rows = list(session.exec(stmt.order_by(m.Order.id)))
    orders: list[SimOrder] = []
    for i, r in enumerate(rows):
        status = S(r.status)
        ci = cidx.get(r.rider_id, -1) if r.rider_id else -1
        store = sidx[r.store_id]
        if ci >= 0 and couriers[ci].offline:
            ci = -1  # a bag with an offline rider waits where the rider stopped
            if status == S.picked_up:
                gone = couriers[cidx[r.rider_id]]  # type: ignore[index]
                store = _handover_store(stores, sidx, gone)
        o = SimOrder(
            idx=i,
            id=r.id,
            store=store,
            x=r.x,
            y=r.y,
            placed=world.minute(aware(r.placed_at)),
            ready=world.minute(aware(r.ready_at)),
            promised=world.minute(aware(r.promised_at)),
            status=status,
            courier=ci if status in (S.assigned, S.picked_up) else -1,
            assigned_at=world.minute(aware(r.assigned_at)) if r.assigned_at else None,
            pickup=world.minute(aware(r.picked_up_at)) if r.picked_up_at else None,
            priority=r.priority,
            zone=r.zone,
            customer_id=r.customer_id,
            value_cents=r.value_cents,
            held=r.on_hold,
        )
        o.in_bag = status == S.picked_up
        orders.append(o)

    sim = cls(
        orders=orders,
        stores=stores,
        couriers=couriers,
        dispatcher=dispatcher,
        meters_per_minute=world.meters_per_minute,
        pickup_service=world.pickup_service_minutes,
        dropoff_service=world.dropoff_service_minutes,
        target_minutes=world.target_minutes,
        max_minutes=world.max_minutes,
        pay_per_order_cents=world.pay_per_order_cents,
        pay_per_hour_cents=world.pay_per_hour_cents,
        seed=seed,
        now=now,
        epoch=aware(world.epoch),
        name=world.name,
    )
    for w in session.exec(select(m.Weather).order_by(m.Weather.id)):  # type: ignore[arg-type]
        sim.weather.append(
            Weather(
                w.x,
                w.y,
                w.radius_m,
                w.speed_factor,
                world.minute(aware(w.starts_at)),
                world.minute(aware(w.ends_at)),
                w.zone,
                persisted=True,
            )
        )

    by_courier: dict[int, list[SimOrder]] = {}
    for o in orders:
        if o.courier >= 0:
            by_courier.setdefault(o.courier, []).append(o)
    for ci, mine in by_courier.items():
        c = couriers[ci]
        stops: list[Stop] = []
        bag = sorted((o for o in mine if o.status == S.picked_up), key=lambda o: (o.promised, o.id))
        if bag:
            b = _record(sim, AssignmentRecord, c.id, bag, picked=True)
            stops += [Stop("dropoff", o.x, o.y, o.id, (o.idx,), b) for o in bag]
        waiting = [o for o in mine if o.status == S.assigned]
        for store in sorted({o.store for o in waiting}, key=lambda s: stores[s].id):
            group = sorted((o for o in waiting if o.store == store), key=lambda o: (o.promised, o.id))
            b = _record(sim, AssignmentRecord, c.id, group, picked=False)
            st = stores[store]
            stops.append(Stop("pickup", st.x, st.y, st.id, tuple(o.idx for o in group), b))
            stops += [Stop("dropoff", o.x, o.y, o.id, (o.idx,), b) for o in group]
        c.stops = stops
        sim._schedule(c, keep_first_leg=False)
        for s in c.stops:
            if s.kind == "pickup":
                sim.assignments[s.bundle].pickup = s.service
    return sim


def _handover_store(stores: list, sidx: dict[str, int], courier: Any) -> int:
    from tools.sim.engine import SimStore

    key = f"handover:{courier.id}"
    if key not in sidx:
        sidx[key] = len(stores)
        stores.append(SimStore(key, courier.x, courier.y, courier.zone, virtual=True))
    return sidx[key]


def _record(sim: Simulation, rec_cls: Any, courier_id: str, group: list, *, picked: bool) -> int:
    b = len(sim.assignments)
    t = min((o.assigned_at for o in group if o.assigned_at is not None), default=sim.now)
    sim.assignments.append(rec_cls(t, sim.now, courier_id, tuple(o.id for o in group), b, picked=picked))
    return b


def write_to_session(sim: Simulation, session: Session, *, actor: str = "simulator") -> dict[str, int]:
    changed = 0
    transitions = 0
    for o in sim.orders:
        row = session.get(m.Order, o.id)
        if row is None:
            continue
        dirty = False
        ready_at = sim.at(o.ready)
        if abs(sim.epoch.timestamp() + o.ready * 60 - aware(row.ready_at).timestamp()) > 1e-3:
            row.ready_at = ready_at
            dirty = True
        if row.x != o.x or row.y != o.y:
            row.x, row.y = o.x, o.y
            dirty = True
        if row.priority != o.priority:
            row.priority = o.priority
            dirty = True
        for status, t, courier_id in o.history:
            if status == S.assigned:
                row.rider_id = courier_id
            elif status in (S.confirmed, S.picking, S.ready) and OrderStatus(row.status) == S.assigned:
                row.rider_id = None
            transition_order(session=session, order=row, to=status, at=sim.at(t), actor=actor)
            transitions += 1
            dirty = True
        o.history.clear()
        if o.status == S.picked_up and o.courier < 0 and row.rider_id is not None:
            row.rider_id = None  # the bag waits for another rider
            dirty = True
        if dirty:
            session.add(row)
            changed += 1
    riders = 0
    for c in sim.couriers:
        r = session.get(m.Rider, c.id)
        if r is None:
            continue
        x, y = sim.position(c, sim.now)
        r.x, r.y = x, y
        if c.offline:
            r.status = m.RiderStatus.offline
        elif c.stops:
            r.status = m.RiderStatus.busy
        elif c.on_time <= sim.now < c.off_time:
            r.status = m.RiderStatus.idle
        else:
            r.status = m.RiderStatus.off_shift
        r.free_at = sim.at(sim.route_end(c)[2]) if c.stops else None
        session.add(r)
        riders += 1
    for w in sim.weather:
        if not w.persisted:
            session.add(
                m.Weather(
                    zone=w.zone,
                    x=w.x,
                    y=w.y,
                    radius_m=w.radius,
                    speed_factor=w.factor,
                    starts_at=sim.at(w.start),
                    ends_at=sim.at(w.end),
                    label="rain",
                )
            )
            w.persisted = True
    world = get_world(session=session)
    world.now = sim.at(sim.now)
    session.add(world)
    session.flush()
    return {"orders_changed": changed, "transitions": transitions, "riders": riders}

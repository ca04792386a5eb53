"""Exceptions injected into a running simulation, and detectors that notice them.

Each injector changes the simulated world at its current minute and emits one typed
``ExceptionEvent`` (ids ``sim-<seed>-<n>``, deterministic). Detectors scan the state and emit an
event per newly affected order:

- ``rider_offline``: the courier vanishes where it is; orders it was heading to collect go back to the
  pool, bags it carried wait at that spot (a hand-over point) for another courier.
- ``weather_slowdown``: a disc and time window of slower travel; routes not yet under way re-timed.
- ``prep_delay``: a store's orders not yet ready become ready ``minutes`` later.
- ``stockout_after_payment``: picking finds an item missing; the order waits for a substitute/transfer.
- ``rider_stall`` (no event: nobody sees it happen) + ``detect_stalled``: bags in transit too long.
- ``address_change``: the customer moves the drop-off; the courier's route is re-timed.
- ``detect_late_risk``: orders whose predicted drop-off (a copy of the simulation run forward with the
  baseline dispatcher) misses the promise.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from tools.events import ExceptionEvent, ExceptionType
from tools.state_machine import OrderStatus

if TYPE_CHECKING:
    from tools.sim.dispatch import Dispatcher
    from tools.sim.engine import SimCourier, Simulation

S = OrderStatus
E = ExceptionType


def _courier(sim: Simulation, courier_id: str) -> SimCourier:
    if courier_id not in sim.courier_index:
        raise KeyError(f"unknown courier {courier_id!r}")
    return sim.couriers[sim.courier_index[courier_id]]


def _order(sim: Simulation, order_id: str) -> Any:
    if order_id not in sim.order_index:
        raise KeyError(f"unknown order {order_id!r}")
    return sim.orders[sim.order_index[order_id]]


def rider_offline(sim: Simulation, courier_id: str) -> ExceptionEvent:
    from tools.sim.engine import SimStore

    c = _courier(sim, courier_id)
    x, y = sim.position(c, sim.now)
    hand_key = f"handover:{c.id}@{sim.now:g}"
    in_bag = [o for o in sim.orders if o.courier == c.idx and o.status == S.picked_up]
    waiting = [o for o in sim.orders if o.courier == c.idx and o.status == S.assigned]
    if in_bag:
        sim.store_index[hand_key] = len(sim.stores)
        sim.stores.append(SimStore(hand_key, x, y, c.zone, virtual=True))
    for start in c.bundle_start.values():
        c.busy_minutes += max(0.0, min(sim.now, c.off_time) - max(start, c.on_time))
    c.bundle_start.clear()
    c.stops = []
    c.version += 1
    c.x, c.y, c.offline, c.view = x, y, True, None
    for o in waiting:
        sim._release(o, sim.now)
    for o in in_bag:
        o.store = sim.store_index[hand_key]
        o.ready = sim.now
        sim._release(o, sim.now)
    affected = in_bag + waiting
    return sim.emit(
        E.rider_offline,
        zone=c.zone,
        order_ids=[o.id for o in affected],
        rider_ids=[c.id],
        store_ids=sorted({sim.stores[o.store].id for o in waiting}),
        customer_ids=[o.customer_id for o in affected if o.customer_id],
        payload={"x": x, "y": y, "in_bag": [o.id for o in in_bag], "to_collect": [o.id for o in waiting]},
    )


def weather_slowdown(
    sim: Simulation,
    *,
    x: float,
    y: float,
    radius_m: float,
    speed_factor: float = 0.6,
    minutes: float = 120.0,
    start: float | None = None,
    zone: str = "",
) -> ExceptionEvent:
    from tools.sim.engine import Weather

    if not 0 < speed_factor <= 1:
        raise ValueError("speed_factor must be in (0, 1]")
    t0 = sim.now if start is None else start
    sim.weather.append(Weather(x, y, radius_m, speed_factor, t0, t0 + minutes, zone))
    for c in sim.couriers:
        if c.stops:
            sim.reschedule(c)
    r2 = radius_m * radius_m
    inside = [
        o
        for o in sim.orders
        if o.status not in (S.delivered, S.cancelled, S.failed)
        and ((o.x - x) ** 2 + (o.y - y) ** 2 <= r2 or _store_in(sim, o, x, y, r2))
    ]
    return sim.emit(
        E.weather_slowdown,
        zone=zone,
        order_ids=[o.id for o in inside],
        payload={
            "x": x,
            "y": y,
            "radius_m": radius_m,
            "speed_factor": speed_factor,
            "starts_at": sim.at(t0).isoformat(),
            "ends_at": sim.at(t0 + minutes).isoformat(),
        },
    )


def _store_in(sim: Simulation, o: Any, x: float, y: float, r2: float) -> bool:
    st = sim.stores[o.store]
    return (st.x - x) ** 2 + (st.y - y) ** 2 <= r2


def _delay_ready(sim: Simulation, orders: list[Any], minutes: float) -> set[int]:
    from tools.sim.engine import _EV_READY

    couriers = set()
    for o in orders:
        o.ready += minutes
        o.view = None
        if o.status == S.picking:
            sim._push(o.ready, _EV_READY, o.idx)
        if o.courier >= 0:
            couriers.add(o.courier)
    for ci in sorted(couriers):
        sim.reschedule(sim.couriers[ci])
    return couriers


def prep_delay(sim: Simulation, store_id: str, minutes: float) -> ExceptionEvent:
    if store_id not in sim.store_index:
        raise KeyError(f"unknown store {store_id!r}")
    si = sim.store_index[store_id]
    hit = [
        o
        for o in sim.orders
        if o.store == si
        and o.placed <= sim.now
        and (o.status in (S.confirmed, S.picking) or (o.status == S.assigned and o.ready > sim.now))
    ]
    _delay_ready(sim, hit, minutes)
    st = sim.stores[si]
    return sim.emit(
        E.prep_delay,
        zone=st.zone,
        order_ids=[o.id for o in hit],
        store_ids=[store_id],
        customer_ids=[o.customer_id for o in hit if o.customer_id],
        payload={"delay_minutes": minutes},
    )


def stockout_after_payment(
    sim: Simulation, order_id: str, *, sku_id: str = "", delay_minutes: float = 5.0
) -> ExceptionEvent:
    o = _order(sim, order_id)
    if not (o.status in (S.confirmed, S.picking) or (o.status == S.assigned and o.ready > sim.now)):
        raise ValueError(f"order {order_id} is {o.status.value}: picking is over")
    _delay_ready(sim, [o], delay_minutes)
    return sim.emit(
        E.stockout_after_payment,
        zone=o.zone,
        order_ids=[o.id],
        store_ids=[sim.stores[o.store].id],
        customer_ids=[o.customer_id] if o.customer_id else [],
        payload={"sku_id": sku_id, "delay_minutes": delay_minutes},
    )


def rider_stall(sim: Simulation, courier_id: str, minutes: float) -> None:
    """The courier stops moving for ``minutes`` (puncture, traffic); nobody reports it."""
    c = _courier(sim, courier_id)
    if not c.stops:
        c.last_depart = max(c.last_depart, sim.now) + minutes
        c.view = None
        return None
    head = c.stops[0]
    if head.scheduled and head.leg_depart <= sim.now:
        head.arrive += minutes
    else:
        c.last_depart += minutes
    sim.reschedule(c)
    return None


def detect_stalled(sim: Simulation, threshold_minutes: float = 30.0) -> list[ExceptionEvent]:
    """One stalled_in_transit event per bag picked up more than ``threshold_minutes`` ago, not yet delivered."""
    seen = sim.reported.setdefault("stalled", set())
    out = []
    for o in sim.orders:
        if o.status != S.picked_up or o.pickup is None or o.id in seen:
            continue
        age = sim.now - o.pickup
        if age > threshold_minutes:
            seen.add(o.id)
            rider = [sim.couriers[o.courier].id] if o.courier >= 0 else []
            out.append(
                sim.emit(
                    E.stalled_in_transit,
                    zone=o.zone,
                    order_ids=[o.id],
                    rider_ids=rider,
                    customer_ids=[o.customer_id] if o.customer_id else [],
                    payload={"minutes_in_transit": age, "threshold_minutes": threshold_minutes},
                )
            )
    return out


def address_change(sim: Simulation, order_id: str, x: float, y: float) -> ExceptionEvent:
    o = _order(sim, order_id)
    if o.status in (S.delivered, S.cancelled, S.failed):
        raise ValueError(f"order {order_id} is {o.status.value}")
    old = (o.x, o.y)
    o.x, o.y, o.view = x, y, None
    if o.courier >= 0:
        c = sim.couriers[o.courier]
        for s in c.stops:
            if s.kind == "dropoff" and s.orders == (o.idx,):
                s.x, s.y = x, y
                if s is c.stops[0]:
                    s.scheduled = False  # the courier turns towards the new address now
                    c.x, c.y = sim.position(c, sim.now)
                    c.last_depart = sim.now
        sim.reschedule(c)
    return sim.emit(
        E.address_change,
        zone=o.zone,
        order_ids=[o.id],
        customer_ids=[o.customer_id] if o.customer_id else [],
        payload={"old": {"x": old[0], "y": old[1]}, "new": {"x": x, "y": y}, "moved_m": math.dist(old, (x, y))},
    )


def predict_dropoffs(
    sim: Simulation, *, horizon_minutes: float = 240.0, dispatcher: Dispatcher | None = None
) -> dict[str, float | None]:
    """Predicted drop-off minute of every active order: a copy of the simulation run forward."""
    from tools.sim.baseline import BaselineDispatcher

    disp = dispatcher or BaselineDispatcher()
    twin = copy.deepcopy(sim, memo={id(sim.dispatcher): disp, id(sim.events): []})
    twin.dispatcher = disp
    twin.run(until=sim.now + horizon_minutes)
    return {
        o.id: twin.orders[o.idx].dropoff
        for o in sim.orders
        if o.status not in (S.delivered, S.cancelled, S.failed) and o.placed <= sim.now
    }


def detect_late_risk(
    sim: Simulation, *, slack_minutes: float = 0.0, horizon_minutes: float = 240.0, zone: str | None = None
) -> list[ExceptionEvent]:
    """One order_late_risk event per active order newly predicted to miss its promise."""
    seen = sim.reported.setdefault("late", set())
    pred = predict_dropoffs(sim, horizon_minutes=horizon_minutes)
    out = []
    for oid, drop in sorted(pred.items(), key=lambda kv: (sim.orders[sim.order_index[kv[0]]].promised, kv[0])):
        o = sim.orders[sim.order_index[oid]]
        if oid in seen or (zone is not None and o.zone != zone):
            continue
        if drop is None or drop > o.promised + slack_minutes:
            seen.add(oid)
            out.append(
                sim.emit(
                    E.order_late_risk,
                    zone=o.zone,
                    order_ids=[oid],
                    rider_ids=[sim.couriers[o.courier].id] if o.courier >= 0 else [],
                    store_ids=[sim.stores[o.store].id],
                    customer_ids=[o.customer_id] if o.customer_id else [],
                    payload={
                        "promised_at": sim.at(o.promised).isoformat(),
                        "predicted_dropoff_at": sim.at(drop).isoformat() if drop is not None else None,
                        "predicted_delay_minutes": (drop - o.promised) if drop is not None else None,
                    },
                )
            )
    return out

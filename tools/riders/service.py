"""Database functions of the riders tools: loads, weather, and the solver's input built from the world."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import cast

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from tools.db import in_param
from tools.models import Order, Rider, RiderStatus, Store, Weather, WorldInfo, aware
from tools.riders.problem import OrderJob, RiderState, SolverParams
from tools.state_machine import OrderStatus

# orders a rider is carrying or committed to: they count against its capacity
HELD = frozenset({OrderStatus.assigned, OrderStatus.picked_up})
# orders that can be given a (new) rider by a plan; picked-up bags are handed over by apply only
PLANNABLE = frozenset({OrderStatus.confirmed, OrderStatus.picking, OrderStatus.ready, OrderStatus.assigned})
UNAVAILABLE = frozenset({RiderStatus.offline, RiderStatus.off_shift})


_LOADS = (
    sa_select(col(Order.rider_id), func.count())
    .where(col(Order.rider_id).is_not(None), col(Order.status).in_([s.value for s in HELD]))
    .group_by(col(Order.rider_id))
)
_LOADS_OF = _LOADS.where(in_param(col(Order.rider_id), "riders"))  # built once, like _LOADS
_WEATHER = select(Weather)


def rider_loads(*, session: Session, rider_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Orders held (assigned or picked up) per rider."""
    rows = (
        session.execute(_LOADS)
        if rider_ids is None
        else session.execute(_LOADS_OF, {"riders": [str(r) for r in rider_ids]})
    )
    return {str(rid): int(cast(int, n)) for rid, n in rows if rid is not None}


def held_orders(*, session: Session, rider_id: str) -> list[Order]:
    stmt = (
        select(Order)
        .where(Order.rider_id == rider_id)
        .where(
            Order.status.in_([s.value for s in HELD])  # type: ignore[attr-defined]
        )
    )
    return list(session.exec(stmt.order_by(Order.id)))


def speed_factor_at(*, session: Session, now: datetime, points: Iterable[tuple[float, float]]) -> float:
    """The slowest active weather factor whose disc covers any of the points (1.0 when none)."""
    active = [
        w for w in session.scalars(_WEATHER) if aware(w.starts_at) <= now < aware(w.ends_at) and w.speed_factor < 1.0
    ]
    if not active:
        return 1.0
    pts = list(points)
    factor = 1.0
    for w in active:
        r2 = w.radius_m * w.radius_m
        if any((x - w.x) ** 2 + (y - w.y) ** 2 <= r2 for x, y in pts):
            factor = min(factor, w.speed_factor)
    return factor


def is_available(rider: Rider, now: datetime) -> bool:
    return RiderStatus(rider.status) not in UNAVAILABLE and aware(rider.shift_end) > now


@dataclass(slots=True, frozen=True)
class PlanOrder:
    """The columns of an order a plan reads (``PLAN_ORDER_COLUMNS``), without an ORM object: a storm
    plans ~240 orders, and loading them as ``Order`` rows cost more than reading them. The solver's
    input takes these or ``Order`` rows alike."""

    id: str
    status: str
    store_id: str
    rider_id: str | None
    x: float
    y: float
    ready_at: datetime
    promised_at: datetime
    priority: int
    on_hold: bool
    zone: str


PLAN_ORDER_COLUMNS = tuple(getattr(Order, f.name) for f in fields(PlanOrder))


def order_job(order: PlanOrder | Order, store: Store, world: WorldInfo) -> OrderJob:
    return OrderJob(
        id=order.id,
        store_id=store.id,
        store_x=store.x,
        store_y=store.y,
        x=order.x,
        y=order.y,
        ready=world.minute(order.ready_at),
        promise=world.minute(order.promised_at),
        priority=order.priority,
    )


def rider_state(
    rider: Rider, load: int, world: WorldInfo, now: datetime, route_end: tuple[float, float, float] | None = None
) -> RiderState:
    """The solver's view of a rider: it starts new work where and when its current route ends
    (``route_end``: minutes from now, x, y; see tools.orders.eta.route_ends), else where it is now."""
    now_min = world.minute(now)
    free = world.minute(rider.free_at) if rider.free_at is not None and load > 0 else now_min
    x, y = rider.x, rider.y
    if route_end is not None:
        free, x, y = max(free, now_min + route_end[0]), route_end[1], route_end[2]
    return RiderState(
        id=rider.id,
        x=x,
        y=y,
        free_at=max(free, now_min),
        shift_end=world.minute(rider.shift_end),
        capacity=rider.capacity,
        load=load,
        shift_start=world.minute(rider.shift_start),
    )


def solver_input(
    *, session: Session, orders: Sequence[PlanOrder | Order], riders: list[Rider], now: datetime
) -> tuple[list[OrderJob], list[RiderState], SolverParams]:
    """The solver's orders, riders and parameters for these rows (weather and world constants applied).

    Orders being re-planned no longer weigh on the rider they are assigned to now; a rider carrying
    or assigned other orders starts where and when it has delivered them."""
    from tools.orders.eta import route_ends
    from tools.service import get_store, get_world

    world = get_world(session=session)
    loads = rider_loads(session=session, rider_ids=[r.id for r in riders])
    for o in orders:
        if o.rider_id and OrderStatus(o.status) == OrderStatus.assigned and o.rider_id in loads:
            loads[o.rider_id] -= 1
    stores = {sid: get_store(session=session, store_id=sid) for sid in dict.fromkeys(o.store_id for o in orders)}
    jobs = [order_job(o, stores[o.store_id], world) for o in orders]
    ends = route_ends(session=session, riders=riders, now=now, exclude=frozenset(o.id for o in orders))
    states = [rider_state(r, loads.get(r.id, 0), world, now, ends.get(r.id)) for r in riders]
    pts = [(s.x, s.y) for s in stores.values()] + [(o.x, o.y) for o in orders]
    params = SolverParams(
        now=world.minute(now),
        meters_per_minute=world.meters_per_minute,
        speed_factor=speed_factor_at(session=session, now=now, points=pts),
        pickup_service=world.pickup_service_minutes,
        dropoff_service=world.dropoff_service_minutes,
    )
    return jobs, states, params

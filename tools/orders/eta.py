"""Predicted pickup and drop-off times of active orders, and how late each is against its promise.

The model, in order of what a rider does:

* Travel legs follow the MDRP rule: ``ceil(distance / (metres per minute * speed factor))``. The speed
  factor of a leg is the slowest ``Weather`` disc active at ``now`` covering either end of the leg
  (the weather is assumed to stay as it is now for the rest of the prediction).
* An order's food is ready at ``ready_at``; a store with ``prep_delay_minutes > 0`` adds that delay to
  orders that are not ready yet (``ready_at`` still in the future).
* Riders with orders (status ``assigned``/``picked_up``, rider not offline) work sequentially: first
  they deliver what is already in the bag (earliest promise first), then they visit the stores of their
  assigned orders (earliest ready first), wait for the food, pick up every assigned order of that store
  (pickup service minutes once per store) and deliver them (earliest promise first, drop-off service
  minutes per order).
* Orders without a working rider (not assigned yet, or whose rider went offline — then the bag is
  collected where that rider stopped) are dispatched greedily, earliest ready first, to the on-shift
  rider who can reach the pickup point soonest: an idle rider from where it is now, or a busy rider
  once its current route ends (its ``free_at`` when it carries no order we know of). Each such rider
  takes one order at a time, so a shortage of riders shows up as growing lateness. Bundling is
  ignored: the prediction errs on the late side.
* When no rider is on shift at all, the pessimistic default applies: a rider is assumed to reach the
  pickup point ``NO_RIDER_WAIT_MINUTES`` after the later of now and the ready time.

Terminal orders (delivered, cancelled, failed) get no prediction.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, bindparam, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from tools.db import in_param
from tools.models import Order, Rider, RiderStatus, Store, Weather, aware
from tools.service import get_world
from tools.state_machine import ACTIVE, OrderStatus, order_status

NO_RIDER_WAIT_MINUTES = 30.0


def active_at(now: datetime) -> ColumnElement[bool]:
    """The orders that are active at ``now``: an active status, and placed by then. A replayed real
    day holds every order of the day from the start, those placed later still ``placed``: they are
    not there yet for the dispatcher, the forecast or the agent."""
    return and_(
        col(Order.status).in_([s.value for s in ACTIVE]),
        or_(col(Order.status) != OrderStatus.placed.value, col(Order.placed_at) <= now),
    )


# the forecast's queries, built once (building a statement and its cache key costs more than
# running these small ones); ``now`` and the riders are parameters
WEATHER_AT = select(Weather).where(col(Weather.starts_at) <= bindparam("now"), col(Weather.ends_at) > bindparam("now"))
_STORES = select(Store)
_RIDERS = select(Rider)
_ROUTE_COLUMNS = (
    col(Order.id),
    col(Order.status),
    col(Order.store_id),
    col(Order.x),
    col(Order.y),
    col(Order.rider_id),
    col(Order.ready_at),
    col(Order.promised_at),
)
ACTIVE_NOW = and_(
    col(Order.status).in_([s.value for s in ACTIVE]),
    or_(col(Order.status) != OrderStatus.placed.value, col(Order.placed_at) <= bindparam("now")),
)
_ACTIVE_ROWS = sa_select(*_ROUTE_COLUMNS).where(ACTIVE_NOW)
_HELD_ROWS = sa_select(*_ROUTE_COLUMNS).where(
    col(Order.status).in_([OrderStatus.assigned.value, OrderStatus.picked_up.value]),
    in_param(col(Order.rider_id), "riders"),
)


@dataclass(frozen=True)
class Prediction:
    order_id: str
    rider_id: str | None  # the rider the prediction relies on (assigned, or the one dispatch would pick)
    basis: str  # in_bag | assigned | next_rider | stranded | no_rider
    pickup_at: datetime | None  # None when the order is already in a working rider's bag
    dropoff_at: datetime
    promised_at: datetime
    minutes_late: float  # drop-off minus promise, negative when early

    @property
    def late(self) -> bool:
        return self.minutes_late > 0


class PredictionCache:
    """Whole-world predictions shared by consecutive steps that do not move orders, riders or stock.

    A plan's executor puts one in ``ToolContext.extras[ETA_CACHE]`` and clears it whenever a step
    that can change what the prediction reads (dispatch, inventory, cancel...) is about to run or has
    run; a storm's ~200 delay notices then cost one simulation instead of one each. Keyed by ``now``:
    a live clock that moved on recomputes."""

    def __init__(self) -> None:
        self._now: datetime | None = None
        self._predictions: dict[str, Prediction] = {}

    def predict(self, *, session: Session, now: datetime) -> dict[str, Prediction]:
        now = aware(now)
        if self._now != now:
            self._predictions = predict_dropoffs(session=session, order_ids=None, now=now)
            self._now = now
        return self._predictions

    def clear(self) -> None:
        self._now = None
        self._predictions = {}


# the ToolContext.extras key under which an executor shares a PredictionCache
ETA_CACHE = "eta_cache"


@dataclass
class _Task:
    order_id: str
    px: float  # where the food is collected
    py: float
    ready: float  # minutes from now
    dx: float
    dy: float
    promised: float
    basis: str


class _Weather:
    def __init__(self, rows: list[Weather]) -> None:
        self.x = np.array([w.x for w in rows], dtype=float)
        self.y = np.array([w.y for w in rows], dtype=float)
        self.r = np.array([w.radius_m for w in rows], dtype=float)
        self.f = np.array([w.speed_factor for w in rows], dtype=float)
        self.discs = [(w.x, w.y, w.radius_m, w.speed_factor) for w in rows]

    def factors(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Speed factor at each point: the slowest disc covering it, else 1."""
        out = np.ones(len(xs))
        if len(self.f) == 0 or len(xs) == 0:
            return out
        inside = np.hypot(xs[:, None] - self.x[None, :], ys[:, None] - self.y[None, :]) <= self.r[None, :]
        return np.minimum(out, np.where(inside, self.f[None, :], 1.0).min(axis=1))

    def at(self, x: float, y: float) -> float:
        """One point, in plain Python: far cheaper than numpy for the handful of discs there are."""
        f = 1.0
        for wx, wy, r, wf in self.discs:
            if wf < f and (x - wx) ** 2 + (y - wy) ** 2 <= r * r:
                f = wf
        return f


def predict_dropoffs(*, session: Session, order_ids: list[str] | None = None, now: datetime) -> dict[str, Prediction]:
    """Predict every active order (or only ``order_ids``; unknown or terminal ids are left out).

    The whole world is always simulated, so an order's prediction does not depend on which other
    orders were asked about.
    """
    now = aware(now)
    world = get_world(session=session)
    mpm = world.meters_per_minute
    pickup_s = float(world.pickup_service_minutes)
    dropoff_s = float(world.dropoff_service_minutes)

    naive_now = now.replace(tzinfo=None)

    def minutes(dt: datetime) -> float:
        # SQLite hands back naive UTC datetimes: compare like with like instead of converting each
        return ((dt - now) if dt.tzinfo else (dt - naive_now)).total_seconds() / 60.0

    weather = _Weather(list(session.scalars(WEATHER_AT, {"now": now})))
    stores = {s.id: (s.x, s.y, s.prep_delay_minutes) for s in session.scalars(_STORES)}
    riders = {r.id: r for r in session.scalars(_RIDERS)}
    rows: list[Any] = list(session.execute(_ACTIVE_ROWS, {"now": now}))

    leg = _legs(weather, mpm)

    promised: dict[str, float] = {}
    by_rider: dict[str, list[tuple]] = defaultdict(list)
    tasks: list[_Task] = []
    for oid, status, store_id, ox, oy, rider_id, ready_at, promised_at in rows:
        sx, sy, delay = stores[store_id]
        ready = minutes(ready_at)
        if ready > 0 and delay:
            ready += delay
        promised[oid] = minutes(promised_at)
        status = order_status(status)
        rider = riders.get(rider_id) if rider_id else None
        working = rider is not None and rider.status != RiderStatus.offline
        if working and status in (OrderStatus.assigned, OrderStatus.picked_up):
            by_rider[rider_id].append((oid, status, store_id, sx, sy, ox, oy, ready, promised[oid]))
        elif status == OrderStatus.picked_up and rider is not None:
            # the bag is with a rider who went offline: someone must collect it where they stopped
            tasks.append(_Task(oid, rider.x, rider.y, 0.0, ox, oy, promised[oid], "stranded"))
        else:
            tasks.append(_Task(oid, sx, sy, ready, ox, oy, promised[oid], "next_rider"))

    result: dict[str, tuple[str | None, str, float | None, float]] = {}
    free_at: dict[str, tuple[float, float, float]] = {}  # rider -> (minute free, x, y)
    for rid, items in by_rider.items():
        free_at[rid] = _walk_route(riders[rid], items, leg, pickup_s, dropoff_s, result)

    _dispatch_rest(
        tasks=tasks,
        riders=riders,
        free_at=free_at,
        now=now,
        mpm=mpm,
        pickup_s=pickup_s,
        dropoff_s=dropoff_s,
        weather=weather,
        result=result,
    )

    wanted = set(order_ids) if order_ids is not None else None
    out: dict[str, Prediction] = {}
    for oid, (pred_rider, basis, pick, drop) in result.items():
        if wanted is not None and oid not in wanted:
            continue
        late = drop - promised[oid]
        out[oid] = Prediction(
            order_id=oid,
            rider_id=pred_rider,
            basis=basis,
            pickup_at=None if pick is None else now + timedelta(minutes=pick),
            dropoff_at=now + timedelta(minutes=drop),
            promised_at=now + timedelta(minutes=promised[oid]),
            minutes_late=round(late, 2),
        )
    return out


def _legs(weather: _Weather, mpm: float) -> Callable[[float, float, float, float], float]:
    """Travel minutes of one leg: the MDRP rule, slowed by the slowest weather disc at either end."""

    def leg(ax: float, ay: float, bx: float, by: float) -> float:
        d = math.hypot(ax - bx, ay - by)
        if d == 0:
            return 0.0
        f = min(weather.at(ax, ay), weather.at(bx, by))
        return float(math.ceil(d / (mpm * f) - 1e-9))

    return leg


def _walk_route(
    rider: Rider,
    items: list[tuple],
    leg: Callable[[float, float, float, float], float],
    pickup_s: float,
    dropoff_s: float,
    result: dict[str, tuple[str | None, str, float | None, float]],
) -> tuple[float, float, float]:
    """A working rider's route over its orders ``(id, status, store, sx, sy, ox, oy, ready, promised)``:
    the bag first (earliest promise first), then store by store (earliest ready first). Fills
    ``result`` per order; returns (minutes from now the route ends, x, y there)."""
    rid = rider.id
    t, x, y = 0.0, rider.x, rider.y
    bag = sorted((i for i in items if i[1] == OrderStatus.picked_up), key=lambda i: (i[8], i[0]))
    for oid, _st, _sid, _sx, _sy, ox, oy, _ready, _prom in bag:
        t += leg(x, y, ox, oy) + dropoff_s
        x, y = ox, oy
        result[oid] = (rid, "in_bag", None, t)
    pending: dict[str, list[tuple]] = defaultdict(list)
    for i in items:
        if i[1] == OrderStatus.assigned:
            pending[i[2]].append(i)
    for _sid, group in sorted(pending.items(), key=lambda kv: (min(i[7] for i in kv[1]), kv[0])):
        sx, sy = group[0][3], group[0][4]
        t += leg(x, y, sx, sy)
        t = max(t, max(i[7] for i in group)) + pickup_s
        pick = t
        x, y = sx, sy
        for oid, _st, _sid, _sx, _sy, ox, oy, _ready, _prom in sorted(group, key=lambda i: (i[8], i[0])):
            t += leg(x, y, ox, oy) + dropoff_s
            x, y = ox, oy
            result[oid] = (rid, "assigned", pick, t)
    return t, x, y


def route_ends(
    *, session: Session, riders: list[Rider], now: datetime, exclude: frozenset[str] = frozenset()
) -> dict[str, tuple[float, float, float]]:
    """Where and when (minutes from now) each rider's current route ends: the orders it carries or is
    assigned, except ``exclude`` (orders being re-planned), walked as predict_dropoffs walks them.
    Riders holding no order are left out."""
    now = aware(now)
    if not riders:
        return {}
    world = get_world(session=session)
    weather = _Weather(list(session.scalars(WEATHER_AT, {"now": now})))
    leg = _legs(weather, world.meters_per_minute)
    stores = {s.id: (s.x, s.y, s.prep_delay_minutes) for s in session.scalars(_STORES)}
    by_id = {r.id: r for r in riders}
    rows: list[Any] = list(session.execute(_HELD_ROWS, {"riders": list(by_id)}))
    items: dict[str, list[tuple]] = defaultdict(list)
    for oid, status, store_id, ox, oy, rider_id, ready_at, promised_at in rows:
        if oid in exclude:
            continue
        sx, sy, delay = stores[store_id]
        ready = (aware(ready_at) - now).total_seconds() / 60.0
        if ready > 0 and delay:
            ready += delay
        promised = (aware(promised_at) - now).total_seconds() / 60.0
        items[rider_id].append((oid, order_status(status), store_id, sx, sy, ox, oy, ready, promised))
    scratch: dict[str, tuple[str | None, str, float | None, float]] = {}
    return {
        rid: _walk_route(
            by_id[rid], its, leg, float(world.pickup_service_minutes), float(world.dropoff_service_minutes), scratch
        )
        for rid, its in items.items()
    }


def _dispatch_rest(
    *,
    tasks: list[_Task],
    riders: dict[str, Rider],
    free_at: dict[str, tuple[float, float, float]],
    now: datetime,
    mpm: float,
    pickup_s: float,
    dropoff_s: float,
    weather: _Weather,
    result: dict[str, tuple[str | None, str, float | None, float]],
) -> None:
    """Greedy list scheduling of riderless orders onto the rider who reaches the pickup soonest."""
    on_shift = [
        r
        for r in riders.values()
        if r.status in (RiderStatus.idle, RiderStatus.busy) and aware(r.shift_start) <= now < aware(r.shift_end)
    ]
    for r in on_shift:
        if r.id not in free_at:
            # busy without an order we know of (e.g. repositioning): free at its free_at, where it is
            busy_until = (aware(r.free_at) - now).total_seconds() / 60.0 if r.free_at else 0.0
            free_at[r.id] = (max(0.0, busy_until) if r.status == RiderStatus.busy else 0.0, r.x, r.y)
    ids = [r.id for r in on_shift]
    rt = np.array([free_at[r.id][0] for r in on_shift], dtype=float)
    rx = np.array([free_at[r.id][1] for r in on_shift], dtype=float)
    ry = np.array([free_at[r.id][2] for r in on_shift], dtype=float)
    shift_end = [(aware(r.shift_end) - now).total_seconds() / 60.0 for r in on_shift]
    rf = weather.factors(rx, ry)

    tasks.sort(key=lambda k: (k.ready, k.promised, k.order_id))
    # Food is collected at a store or where a stranded bag is: a handful of places ("spots") for
    # hundreds of tasks. A rider is always where it started or at the drop-off of a task it took, so
    # every travel time the greedy asks for is one of (riders' starts + tasks' drop-offs) x spots,
    # computed at once with the element-wise operations of one rider vector per task (so the same
    # values). ``arrive[s, j]``: when rider j, from where it is now, reaches spot s; inf once its
    # shift is over by the time it is free. Taking a task rewrites that rider's column only.
    spots: dict[tuple[float, float], int] = {}
    spot_of = [spots.setdefault((k.px, k.py), len(spots)) for k in tasks]
    spot_f = [weather.at(x, y) for x, y in spots]
    drop_fs = [weather.at(k.dx, k.dy) for k in tasks]
    n = len(ids)
    if n:
        spot_x = np.array([x for x, _ in spots], dtype=float)
        spot_y = np.array([y for _, y in spots], dtype=float)
        src_x = np.concatenate((rx, np.array([k.dx for k in tasks], dtype=float)))
        src_y = np.concatenate((ry, np.array([k.dy for k in tasks], dtype=float)))
        src_f = np.concatenate((rf, np.array(drop_fs, dtype=float)))
        d = np.hypot(src_x[:, None] - spot_x[None, :], src_y[:, None] - spot_y[None, :])
        travel = np.ceil(d / (mpm * np.minimum(src_f[:, None], np.array(spot_f, dtype=float)[None, :])) - 1e-9)
        arrive = (rt[:, None] + travel[:n]).T.copy()
        # a rider whose shift is over by the time it is free does not take new work
        arrive[:, ~(rt < np.array(shift_end, dtype=float))] = np.inf
    for i, k in enumerate(tasks):
        drop_f = min(spot_f[spot_of[i]], drop_fs[i])
        to_drop = math.hypot(k.px - k.dx, k.py - k.dy)
        deliver = (math.ceil(to_drop / (mpm * drop_f) - 1e-9) if to_drop else 0.0) + dropoff_s
        arrival = None
        if n:
            at_spot = arrive[spot_of[i]]
            j = int(at_spot.argmin())
            soonest = float(at_spot[j])
            if math.isfinite(soonest):
                arrival = soonest
        if arrival is None:
            pick = max(0.0, k.ready) + NO_RIDER_WAIT_MINUTES + pickup_s
            basis = "no_rider" if k.basis == "next_rider" else k.basis
            result[k.order_id] = (None, basis, pick, pick + deliver)
            continue
        pick = max(arrival, k.ready) + pickup_s
        drop = pick + deliver
        result[k.order_id] = (ids[j], k.basis, pick, drop)
        arrive[:, j] = drop + travel[n + i] if drop < shift_end[j] else np.inf

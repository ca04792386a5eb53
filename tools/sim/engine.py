"""The discrete-event delivery simulator: couriers, orders and a dispatcher, in memory and fast.

Rules are those of the MDRP (Reyes et al. 2018): travel = ceil(distance / (metres per minute x weather
speed factor)); a courier reaches the restaurant, spends half the pickup service parking, picks up at
or after the latest ready time of the bundle, spends the other half leaving; at each drop-off half the
drop-off service before and half after the hand-over. Couriers cannot pick up after their off_time
but finish their drop-offs. A courier executes its bundles one after the other; a bundle given to a
busy courier starts when its route ends.

The weather speed factor of a leg is the smallest factor of the weather discs active at the leg's
departure that contain its origin or its destination (a leg already under way keeps its times).

Time advances in dispatch epochs of ``dispatcher.interval_minutes``; between epochs the events
(placements, ready times, pickups, drop-offs) are processed in time order. Every status change goes
through ``tools.state_machine.check_transition``, so the simulator cannot do what the database would
refuse. Exceptions (tools/sim/injectors.py) change the state and emit typed ``ExceptionEvent``s.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from tools.events import ExceptionEvent, ExceptionType
from tools.sim.dispatch import Assignment, CourierState, Dispatcher, DispatchView, PendingOrder
from tools.state_machine import OrderStatus, check_transition

if TYPE_CHECKING:
    from sqlmodel import Session

    from tools.world.mdrp import MdrpInstance

log = structlog.get_logger(__name__)
S = OrderStatus
_EV_PLACE, _EV_READY, _EV_STOP = 0, 1, 2
DEFAULT_EPOCH = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass(slots=True)
class SimOrder:
    idx: int
    id: str
    store: int  # index into Simulation.stores (the pickup location)
    x: float
    y: float
    placed: float
    ready: float
    promised: float
    status: OrderStatus = S.placed
    courier: int = -1
    assigned_at: float | None = None
    pickup: float | None = None
    dropoff: float | None = None
    priority: int = 0
    zone: str = ""
    customer_id: str = ""
    value_cents: int = 0
    # (status, minute, courier id or None) since the simulation started: sync_to_session replays it
    history: list[tuple[OrderStatus, float, str | None]] = field(default_factory=list)
    in_bag: bool = False  # picked up, possibly handed over after a rider went offline
    held: bool = False  # on hold: never offered to the dispatcher
    view: PendingOrder | None = None


@dataclass(slots=True)
class SimStore:
    id: str
    x: float
    y: float
    zone: str = ""
    virtual: bool = False  # a hand-over point (where an offline rider stopped)


@dataclass(slots=True)
class Stop:
    kind: str  # "pickup" | "dropoff"
    x: float
    y: float
    loc_id: str
    orders: tuple[int, ...]
    bundle: int
    leg_depart: float = 0.0
    arrive: float = 0.0
    service: float = 0.0  # the pickup / drop-off moment
    depart: float = 0.0
    scheduled: bool = False


@dataclass(slots=True)
class SimCourier:
    idx: int
    id: str
    x: float  # where the courier is after its last processed stop
    y: float
    on_time: float
    off_time: float
    capacity: int = 3
    zone: str = ""
    loc_id: str = "0"
    last_depart: float = 0.0  # when it left (or may leave) its current location
    stops: list[Stop] = field(default_factory=list)
    version: int = 0
    offline: bool = False
    delivered: int = 0
    busy_minutes: float = 0.0
    bundle_start: dict[int, float] = field(default_factory=dict)
    moves: list[tuple[float, str, str]] = field(default_factory=list)
    view: CourierState | None = None


@dataclass(slots=True)
class Weather:
    x: float
    y: float
    radius: float
    factor: float
    start: float
    end: float
    zone: str = ""
    persisted: bool = False  # already a Weather row in the database


@dataclass(slots=True)
class AssignmentRecord:
    time: float
    pickup: float
    courier: str
    order_ids: tuple[str, ...]
    bundle: int
    picked: bool = False
    completed: bool = False


class Simulation:
    """One simulated day (or the rest of a day from the database world). See the module docstring."""

    def __init__(
        self,
        *,
        orders: list[SimOrder],
        stores: list[SimStore],
        couriers: list[SimCourier],
        dispatcher: Dispatcher,
        meters_per_minute: float,
        pickup_service: float = 4.0,
        dropoff_service: float = 4.0,
        target_minutes: float = 40.0,
        max_minutes: float = 90.0,
        pay_per_order_cents: int = 1000,
        pay_per_hour_cents: int = 1500,
        seed: int = 0,
        now: float = 0.0,
        epoch: datetime = DEFAULT_EPOCH,
        name: str = "",
    ) -> None:
        self.orders = orders
        self.stores = stores
        self.couriers = couriers
        self.dispatcher = dispatcher
        self.mpm = float(meters_per_minute)
        self.pickup_service = float(pickup_service)
        self.dropoff_service = float(dropoff_service)
        self.target = float(target_minutes)
        self.max_minutes = float(max_minutes)
        self.pay_per_order_cents = pay_per_order_cents
        self.pay_per_hour_cents = pay_per_hour_cents
        self.seed = seed
        self.now = float(now)
        self.start = float(now)
        self.epoch = epoch
        self.name = name
        self.weather: list[Weather] = []
        self.events: list[ExceptionEvent] = []
        self.assignments: list[AssignmentRecord] = []
        self.rejected: list[tuple[float, Assignment, str]] = []
        self.order_index = {o.id: o.idx for o in orders}
        self.courier_index = {c.id: c.idx for c in couriers}
        self.store_index = {s.id: i for i, s in enumerate(stores)}
        self.pending: set[int] = set()
        self._heap: list[tuple[float, int, int, int, int, Any]] = []
        self._seq = 0
        self._n_events = 0
        self._future_places = 0
        self._decide_calls = 0
        self.finished = False
        self.reported: dict[str, set[str]] = {}  # detector -> order ids already reported
        for o in orders:
            if o.held:
                continue
            if o.status == S.placed and o.placed > self.now:
                self._push(o.placed, _EV_PLACE, o.idx)
                self._future_places += 1
            elif o.status in (S.placed, S.confirmed, S.picking, S.ready) or (
                o.status in (S.assigned, S.picked_up) and o.courier < 0
            ):
                self._open(o, self.now)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_instance(cls, inst: MdrpInstance, dispatcher: Dispatcher, seed: int = 0) -> Simulation:
        p = inst.params
        stores = [SimStore(r.id, r.x, r.y, inst.name) for r in inst.restaurants]
        sidx = {s.id: i for i, s in enumerate(stores)}
        orders = [
            SimOrder(
                idx=i,
                id=o.id,
                store=sidx[o.restaurant],
                x=o.x,
                y=o.y,
                placed=o.placement,
                ready=o.ready,
                promised=o.placement + p.target,
                zone=inst.name,
            )
            for i, o in enumerate(inst.orders)
        ]
        couriers = [
            SimCourier(i, c.id, c.x, c.y, c.on_time, c.off_time, zone=inst.name, last_depart=c.on_time)
            for i, c in enumerate(inst.couriers)
        ]
        start = min(min(o.placement for o in inst.orders), min(c.on_time for c in inst.couriers))
        return cls(
            orders=orders,
            stores=stores,
            couriers=couriers,
            dispatcher=dispatcher,
            meters_per_minute=p.meters_per_minute,
            pickup_service=p.pickup_service,
            dropoff_service=p.dropoff_service,
            target_minutes=p.target,
            max_minutes=p.maximum,
            pay_per_order_cents=round(p.pay_per_order * 100),
            pay_per_hour_cents=round(p.pay_per_hour * 100),
            seed=seed,
            now=min(0.0, start),
            name=inst.name,
        )

    @classmethod
    def from_session(cls, session: Session, dispatcher: Dispatcher, seed: int = 0) -> Simulation:
        """The database world from its clock onwards, riders' current routes included."""
        from tools.sim.session_io import build_from_session

        return build_from_session(cls, session, dispatcher, seed)

    def sync_to_session(self, session: Session, *, actor: str = "simulator") -> dict[str, int]:
        """Write order statuses and times, rider positions/status/free_at and the clock back."""
        from tools.sim.session_io import write_to_session

        return write_to_session(self, session, actor=actor)

    # ----------------------------------------------------------------- time and travel
    def at(self, minute: float) -> datetime:
        return self.epoch + timedelta(minutes=minute)

    def speed_factor(self, t: float, x1: float, y1: float, x2: float, y2: float) -> float:
        f = 1.0
        for w in self.weather:
            if w.start <= t < w.end and w.factor < f:
                r2 = w.radius * w.radius
                if (x1 - w.x) ** 2 + (y1 - w.y) ** 2 <= r2 or (x2 - w.x) ** 2 + (y2 - w.y) ** 2 <= r2:
                    f = w.factor
        return f

    def travel(self, x1: float, y1: float, x2: float, y2: float, t: float) -> float:
        d = math.hypot(x1 - x2, y1 - y2)
        f = self.speed_factor(t, x1, y1, x2, y2) if self.weather else 1.0
        return float(math.ceil(d / (self.mpm * f) - 1e-9))

    def global_speed_factor(self, t: float) -> float:
        active = [w.factor for w in self.weather if w.start <= t < w.end]
        return min(active) if active else 1.0

    # ----------------------------------------------------------------- state changes
    def _push(self, t: float, kind: int, a: int, b: int = 0, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, kind, self._seq, a, b, payload))

    def set_status(self, o: SimOrder, to: OrderStatus, t: float) -> None:
        check_transition(o.status, to, order_id=o.id)
        o.status = to
        cid = self.couriers[o.courier].id if o.courier >= 0 else None
        o.history.append((to, t, cid))

    def _open(self, o: SimOrder, t: float) -> None:
        """The order becomes visible to the dispatcher (placement, or back after losing its courier)."""
        if o.status == S.placed:
            self.set_status(o, S.confirmed, t)
        if o.status == S.confirmed and not self.stores[o.store].virtual:
            self.set_status(o, S.picking, t)
        if o.status == S.picking and o.ready <= t:
            self.set_status(o, S.ready, t)
        elif o.status == S.picking:
            self._push(o.ready, _EV_READY, o.idx)
        o.view = None
        self.pending.add(o.idx)

    def _release(self, o: SimOrder, t: float) -> None:
        """Take an order away from its courier; it waits for a new assignment."""
        if o.status == S.assigned:
            back = S.ready if o.ready <= t else S.picking
            self.set_status(o, back, t)
            o.courier = -1
            if back == S.picking:
                self._push(o.ready, _EV_READY, o.idx)
        else:  # picked up: the bag waits where the courier stopped
            o.courier = -1
        o.assigned_at = None
        o.view = None
        self.pending.add(o.idx)

    def _schedule(self, c: SimCourier, keep_first_leg: bool) -> None:
        """Recompute the times of the courier's remaining stops and (re)queue their events."""
        t = c.last_depart
        x, y = c.x, c.y
        half_p = self.pickup_service / 2
        half_d = self.dropoff_service / 2
        for k, s in enumerate(c.stops):
            if k == 0 and keep_first_leg and s.scheduled and s.leg_depart <= self.now:
                arrive = s.arrive  # the leg under way keeps its times
            else:
                s.leg_depart = t
                arrive = t + self.travel(x, y, s.x, s.y, t)
            s.scheduled = True
            s.arrive = arrive
            if s.kind == "pickup":
                s.service = max([arrive + half_p] + [self.orders[i].ready for i in s.orders])
                s.depart = s.service + half_p
            else:
                s.service = arrive + half_d
                s.depart = s.service + half_d
            t, x, y = s.depart, s.x, s.y
        c.version += 1
        c.view = None
        for s in c.stops:
            self._push(s.service, _EV_STOP, c.idx, c.version, s)

    def reschedule(self, c: SimCourier) -> list[int]:
        """Re-time a courier's route after a change; bundles whose pickup would fall after off_time
        are released (their orders wait for another courier). Returns the released order indices."""
        self._schedule(c, keep_first_leg=True)
        released: list[int] = []
        late = [s.bundle for s in c.stops if s.kind == "pickup" and s.service > c.off_time]
        if late:
            first = min(late)
            drop = {b for b in {s.bundle for s in c.stops} if b >= first}
            for s in c.stops:
                if s.bundle in drop and s.kind == "pickup":
                    for i in s.orders:
                        self._release(self.orders[i], self.now)
                        released.append(i)
            c.stops = [s for s in c.stops if s.bundle not in drop]
            self._schedule(c, keep_first_leg=True)
        return released

    def route_end(self, c: SimCourier) -> tuple[float, float, float]:
        """(x, y, time) where and when the courier's current route ends."""
        if c.stops:
            last = c.stops[-1]
            return last.x, last.y, max(last.depart, c.on_time)
        return c.x, c.y, max(c.last_depart, c.on_time)

    def position(self, c: SimCourier, t: float) -> tuple[float, float]:
        """Where the courier is at minute t (linear along the leg under way)."""
        if not c.stops:
            return c.x, c.y
        s = c.stops[0]
        if t <= s.leg_depart:
            return c.x, c.y
        if t >= s.arrive or s.arrive <= s.leg_depart:
            return s.x, s.y
        f = (t - s.leg_depart) / (s.arrive - s.leg_depart)
        return c.x + f * (s.x - c.x), c.y + f * (s.y - c.y)

    # ----------------------------------------------------------------- events
    def _process(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            t, kind, _seq, a, b, payload = heapq.heappop(heap)
            if kind == _EV_PLACE:
                self._future_places -= 1
                o = self.orders[a]
                if o.status == S.placed:
                    self._open(o, t)
            elif kind == _EV_READY:
                o = self.orders[a]
                if o.status == S.picking and o.ready <= t:
                    self.set_status(o, S.ready, t)
                    o.view = None
            else:
                c = self.couriers[a]
                if b != c.version or not c.stops or c.stops[0] is not payload:
                    continue
                self._do_stop(c, payload)

    def _do_stop(self, c: SimCourier, s: Stop) -> None:
        c.stops.pop(0)
        c.moves.append((s.leg_depart, c.loc_id, s.loc_id))
        c.bundle_start.setdefault(s.bundle, s.leg_depart)
        c.x, c.y, c.loc_id, c.last_depart = s.x, s.y, s.loc_id, s.depart
        c.view = None
        if s.kind == "pickup":
            if 0 <= s.bundle < len(self.assignments):
                self.assignments[s.bundle].picked = True
            for i in s.orders:
                o = self.orders[i]
                self.set_status(o, S.picked_up, s.service)
                if o.pickup is None:
                    o.pickup = s.service
                o.in_bag = True
        else:
            for i in s.orders:
                o = self.orders[i]
                self.set_status(o, S.delivered, s.service)
                o.dropoff = s.service
                c.delivered += 1
            if not any(x.bundle == s.bundle for x in c.stops):
                start = c.bundle_start.pop(s.bundle, s.leg_depart)
                c.busy_minutes += max(0.0, min(s.depart, c.off_time) - max(start, c.on_time))
                rec = self.assignments[s.bundle] if 0 <= s.bundle < len(self.assignments) else None
                if rec is not None:
                    rec.completed = True

    # ----------------------------------------------------------------- dispatch
    def view(self) -> DispatchView:
        now = self.now
        pend = []
        for i in self.pending:
            o = self.orders[i]
            if o.view is None:
                st = self.stores[o.store]
                o.view = PendingOrder(
                    id=o.id,
                    store_id=st.id,
                    store_x=st.x,
                    store_y=st.y,
                    x=o.x,
                    y=o.y,
                    placed=o.placed,
                    ready=o.ready,
                    promised=o.promised,
                    priority=o.priority,
                )
            pend.append(o.view)
        pend.sort(key=lambda p: (-p.priority, p.placed, p.id))
        cs = []
        for c in self.couriers:
            if c.offline or c.off_time <= now:
                continue
            if c.view is None:
                x, y, free = self.route_end(c)
                load = len({i for s in c.stops for i in s.orders})
                c.view = CourierState(
                    id=c.id,
                    x=x,
                    y=y,
                    free_at=free,
                    on_time=c.on_time,
                    off_time=c.off_time,
                    capacity=c.capacity,
                    load=load,
                )
            cs.append(c.view)
        return DispatchView(
            now=now,
            orders=tuple(pend),
            couriers=tuple(cs),
            meters_per_minute=self.mpm,
            pickup_service=self.pickup_service,
            dropoff_service=self.dropoff_service,
            speed_factor=self.global_speed_factor(now),
            target_minutes=self.target,
        )

    def execute(self, a: Assignment) -> str | None:
        """Start one assignment; return None, or why it was refused (the orders then stay pending)."""
        ci = self.courier_index.get(a.courier_id)
        if ci is None:
            return f"unknown courier {a.courier_id}"
        c = self.couriers[ci]
        if c.offline or c.off_time <= self.now:
            return f"courier {c.id} is not available"
        if not a.order_ids or len(set(a.order_ids)) != len(a.order_ids):
            return "empty or repeated order ids"
        if len(a.order_ids) > c.capacity:
            return f"{len(a.order_ids)} orders exceed capacity {c.capacity}"
        idxs = []
        for oid in a.order_ids:
            oi = self.order_index.get(oid)
            if oi is None or oi not in self.pending:
                return f"order {oid} is not waiting for a courier"
            idxs.append(oi)
        store = self.orders[idxs[0]].store
        if any(self.orders[i].store != store for i in idxs):
            return "orders of one assignment must share the pickup store"
        st = self.stores[store]
        bundle = len(self.assignments)
        was_idle = not c.stops
        if was_idle:
            c.last_depart = max(c.last_depart, self.now, c.on_time)
        new = [Stop("pickup", st.x, st.y, st.id, tuple(idxs), bundle)]
        new += [Stop("dropoff", self.orders[i].x, self.orders[i].y, self.orders[i].id, (i,), bundle) for i in idxs]
        old_stops = list(c.stops)
        old_last = c.last_depart
        c.stops.extend(new)
        self._schedule(c, keep_first_leg=True)
        if new[0].service > c.off_time + 1e-9:
            c.stops = old_stops
            c.last_depart = old_last
            self._schedule(c, keep_first_leg=True)
            return f"pickup at {new[0].service:g} after courier {c.id} off_time {c.off_time:g}"
        self.assignments.append(AssignmentRecord(self.now, new[0].service, c.id, tuple(a.order_ids), bundle))
        for i in idxs:
            o = self.orders[i]
            self.pending.discard(i)
            o.courier = ci
            o.assigned_at = self.now
            o.view = None
            self.set_status(o, S.assigned, self.now)
        return None

    def _dispatch(self) -> None:
        if not self.pending:
            return
        self._decide_calls += 1
        for a in self.dispatcher.decide(self.view()):
            why = self.execute(a)
            if why is not None:
                self.rejected.append((self.now, a, why))
                log.debug("assignment_refused", courier=a.courier_id, orders=a.order_ids, reason=why)

    # ----------------------------------------------------------------- running
    def _work_left(self) -> bool:
        if self._future_places:
            return True
        if any(c.stops for c in self.couriers):
            return True
        if self.pending:
            return any(not c.offline and c.off_time > self.now for c in self.couriers)
        return False

    def step(self, minutes: float | None = None) -> None:
        """Advance the clock by one dispatch interval (or ``minutes``), processing what happens."""
        dt = float(minutes if minutes is not None else self.dispatcher.interval_minutes)
        self.now += dt
        self._process(self.now)
        self._dispatch()

    def run(self, until: float | None = None) -> Simulation:
        """Run to minute ``until`` (default: until every order is delivered or cannot be)."""
        interval = float(self.dispatcher.interval_minutes)
        self._process(self.now)
        self._dispatch()
        # how far the day can go: the last shift end plus the longest route a courier can finish
        hard_end = max([c.off_time for c in self.couriers] + [self.now]) + 6 * 60
        while self.now < (until if until is not None else hard_end):
            if until is None and not self._work_left():
                break
            nxt = self.now + interval
            if until is not None:
                nxt = min(nxt, until)
            if not self.pending and self._heap:
                # nothing to decide: jump to the next event's epoch instead of idling minute by minute
                first = self._heap[0][0]
                if first > nxt:
                    steps = math.floor((first - self.now) / interval)
                    nxt = self.now + max(1, steps) * interval
                    if until is not None:
                        nxt = min(nxt, until)
            self.now = nxt
            self._process(self.now)
            self._dispatch()
        if until is None:
            self.finished = True
        return self

    # ----------------------------------------------------------------- results
    def metrics(self) -> dict[str, Any]:
        from tools.sim.metrics import compute_metrics

        return compute_metrics(self)

    def write_solution(self, directory: str | Path) -> Path:
        from tools.sim.solution import write_solution

        return write_solution(self, Path(directory))

    # ----------------------------------------------------------------- exceptions
    def emit(
        self,
        type_: ExceptionType,
        *,
        zone: str = "",
        order_ids: list[str] | None = None,
        rider_ids: list[str] | None = None,
        store_ids: list[str] | None = None,
        customer_ids: list[str] | None = None,
        payload: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> ExceptionEvent:
        self._n_events += 1
        ev = ExceptionEvent(
            id=f"sim-{self.seed}-{self._n_events}",
            type=type_,
            occurred_at=self.at(self.now if at is None else at),
            source="simulator",
            zone=zone,
            order_ids=order_ids or [],
            rider_ids=rider_ids or [],
            store_ids=store_ids or [],
            customer_ids=customer_ids or [],
            payload=payload or {},
        )
        self.events.append(ev)
        return ev

    def inject_rider_offline(self, courier_id: str, **kw: Any) -> ExceptionEvent:
        from tools.sim import injectors

        return injectors.rider_offline(self, courier_id, **kw)

    def inject_weather(self, **kw: Any) -> ExceptionEvent:
        from tools.sim import injectors

        return injectors.weather_slowdown(self, **kw)

    def inject_prep_delay(self, store_id: str, minutes: float, **kw: Any) -> ExceptionEvent:
        from tools.sim import injectors

        return injectors.prep_delay(self, store_id, minutes, **kw)

    def inject_stockout(self, order_id: str, **kw: Any) -> ExceptionEvent:
        from tools.sim import injectors

        return injectors.stockout_after_payment(self, order_id, **kw)

    def inject_stall(self, courier_id: str, minutes: float) -> None:
        """The courier stops moving (nobody reports it): see ``detect_stalled``."""
        from tools.sim import injectors

        injectors.rider_stall(self, courier_id, minutes)

    def inject_address_change(self, order_id: str, x: float, y: float, **kw: Any) -> ExceptionEvent:
        from tools.sim import injectors

        return injectors.address_change(self, order_id, x, y, **kw)

    def detect_stalled(self, threshold_minutes: float = 30.0) -> list[ExceptionEvent]:
        from tools.sim import injectors

        return injectors.detect_stalled(self, threshold_minutes)

    def detect_late_risk(self, **kw: Any) -> list[ExceptionEvent]:
        from tools.sim import injectors

        return injectors.detect_late_risk(self, **kw)

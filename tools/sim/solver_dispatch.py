"""A rolling-horizon dispatcher on the riders solver: every minute, one round of trips, re-planned.

At each epoch the waiting orders whose food is ready within ``ready_horizon`` minutes and the
couriers on shift that are free, or become free / come on shift, within ``plan_horizon`` minutes go
to ``tools.riders.solver.solve_assignment``: one trip per courier (a courier still busy starts where
its route ends), same-store bundles of up to 3, minimising late minutes. Only trips of couriers free
within ``free_horizon`` minutes are committed; a trip planned for a courier that is not free yet is
dropped and its orders planned again at the next epoch. Planning with the couriers about to come on
shift is what stops the dispatcher from handing an order ready in half an hour to the one courier
free now (as a late second order of a bundle) when a fresh courier will be there in time: on the
fast-travel MDRP days (t75) that was where the solver lost to the baseline. For the same reason a
bundle that makes one of its orders late is held (re-planned each minute) until its courier has to
leave within ``late_bundle_window`` minutes.

The solver's objective counts a late order's minutes plus ``late_order_weight`` per late order, so
with few couriers it favours orders that can still make the 40-minute target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tools.riders.problem import OrderJob, RiderState, SolverParams
from tools.riders.solver import solve_assignment
from tools.sim.dispatch import Assignment, DispatchView


@dataclass
class SolverDispatcher:
    name: str = "solver"
    interval_minutes: float = 1.0
    ready_horizon: float = 40.0
    free_horizon: float = 3.0
    plan_horizon: float = 15.0  # also plan for couriers free / on shift within this many minutes
    commit_window: float = math.inf  # commit only trips whose courier must leave this soon (inf: all)
    late_bundle_window: float = 3.0  # hold a bundle with a late order until its courier must leave
    max_queued: int = 1
    late_order_weight: float = 20.0
    unassigned_penalty: float = 1000.0
    travel_weight: float = 0.5

    def decide(self, view: DispatchView) -> list[Assignment]:
        now = view.now
        speed = view.meters_per_minute * view.speed_factor
        orders = [
            OrderJob(
                id=o.id,
                store_id=o.store_id,
                store_x=o.store_x,
                store_y=o.store_y,
                x=o.x,
                y=o.y,
                ready=o.ready,
                promise=o.promised,
                priority=o.priority,
            )
            for o in view.orders
            if o.ready <= now + self.ready_horizon
        ]
        riders = [
            RiderState(
                id=c.id,
                x=c.x,
                y=c.y,
                free_at=c.free_at,
                shift_end=c.off_time,
                capacity=c.capacity,
                load=0,  # a queued bundle is delivered before the next one starts
                shift_start=c.on_time,
            )
            for c in view.couriers
            if c.off_time > now
            and c.on_time <= now + max(self.free_horizon, self.plan_horizon)
            and c.free_at <= now + max(self.free_horizon, self.plan_horizon)
            and c.load <= self.max_queued * c.capacity
        ]
        if not orders or not riders:
            return []
        params = SolverParams(
            now=now,
            meters_per_minute=view.meters_per_minute,
            speed_factor=view.speed_factor,
            pickup_service=view.pickup_service,
            dropoff_service=view.dropoff_service,
            late_order_weight=self.late_order_weight,
            unassigned_penalty=self.unassigned_penalty,
            travel_weight=self.travel_weight,
        )
        sol = solve_assignment(orders, riders, params, rounds=1)
        by_id = {r.id: r for r in riders}
        out: list[Assignment] = []
        for trip in sol.trips:
            r = by_id[trip.rider_id]
            start = max(now, r.free_at, r.shift_start)
            if start > now + self.free_horizon:
                continue  # planned for a courier not free yet: re-planned at a later epoch
            store = next(o for o in orders if o.id == trip.order_ids[0])
            travel = _travel(r.x, r.y, store.store_x, store.store_y, speed)
            # latest departure that still makes the planned pickup
            slack = trip.pickup - view.pickup_service / 2 - travel - start
            due = start + slack <= now + self.commit_window
            late = any(d > o.promise for d, o in zip(trip.dropoffs, _orders(orders, trip.order_ids), strict=True))
            if late and len(trip.order_ids) > 1 and start + slack > now + self.late_bundle_window:
                # a bundle that makes an order late, with time to spare: wait for more couriers
                continue
            if due or late:
                out.append(
                    Assignment(
                        courier_id=trip.rider_id,
                        order_ids=trip.order_ids,
                        predicted_pickup=trip.pickup,
                        predicted_dropoffs=trip.dropoffs,
                    )
                )
        return out


def _travel(x1: float, y1: float, x2: float, y2: float, speed: float) -> float:
    return float(math.ceil(math.hypot(x1 - x2, y1 - y2) / speed - 1e-9))


def _orders(orders: list[OrderJob], ids: tuple[str, ...]) -> list[OrderJob]:
    idx = {o.id: o for o in orders}
    return [idx[i] for i in ids]

"""The baseline dispatcher: nearest idle courier, first come first served, one order per trip.

A fair, simple reference for the solver: at every epoch (each minute) the waiting orders are taken in
order of priority then placement; each goes alone to the idle courier (on shift, route finished)
whose position is closest to its restaurant, provided that courier can still pick it up before its
off_time. No bundling, no look-ahead, no waiting for a better courier.
"""

from __future__ import annotations

import numpy as np

from tools.sim.dispatch import Assignment, DispatchView


class BaselineDispatcher:
    name = "baseline"

    def __init__(self, interval_minutes: float = 1.0) -> None:
        self.interval_minutes = interval_minutes

    def decide(self, view: DispatchView) -> list[Assignment]:
        now = view.now
        free = [c for c in view.couriers if c.on_time <= now < c.off_time and c.free_at <= now and c.load == 0]
        if not free or not view.orders:
            return []
        cx = np.array([c.x for c in free])
        cy = np.array([c.y for c in free])
        off = np.array([c.off_time for c in free])
        used = np.zeros(len(free), dtype=bool)
        speed = view.meters_per_minute * view.speed_factor
        half = view.pickup_service / 2
        out: list[Assignment] = []
        for o in view.orders:
            d = np.hypot(cx - o.store_x, cy - o.store_y)
            pickup = np.maximum(now + np.ceil(d / speed - 1e-9) + half, o.ready)
            d[used | (pickup > off)] = np.inf
            j = int(np.argmin(d))
            if not np.isfinite(d[j]):
                continue
            used[j] = True
            out.append(Assignment(courier_id=free[j].id, order_ids=(o.id,), predicted_pickup=float(pickup[j])))
            if used.all():
                break
        return out

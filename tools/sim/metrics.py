"""Metrics of a simulated day, as the MDRP paper reports them.

- ``orders_placed``: orders whose placement fell within the simulated period (all, for a day).
- ``orders_delivered``; ``click_to_door_mean`` / ``click_to_door_p90``: drop-off minus placement over
  delivered orders (minutes).
- ``share_within_target`` / ``share_within_max``: orders delivered within the target (40) / maximum
  (90) click-to-door minutes, as a share of orders PLACED (an undelivered order counts as a miss);
  ``orders_within_target``: the count behind the first share.
- ``ready_to_pickup_wait_mean``: pickup minus ready time over picked-up orders (food waiting).
- ``courier_utilisation``: minutes couriers spend executing assignments (from leaving for the
  restaurant to leaving the last drop-off), clipped to their shifts, divided by the total shift minutes
  of all couriers. In [0, 1]: 0 = nobody moved, 1 = every courier worked its whole shift.
- ``courier_compensation``: sum over couriers of max(pay per order x orders delivered, pay per hour x
  shift hours), in cents (``courier_compensation_usd`` in dollars).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tools.sim.engine import Simulation


def compute_metrics(sim: Simulation) -> dict[str, Any]:
    placed = [o for o in sim.orders if o.placed <= sim.now]
    delivered = [o for o in placed if o.dropoff is not None]
    c2d: np.ndarray = np.array([o.dropoff - o.placed for o in delivered], dtype=float)  # type: ignore[operator]
    waits = np.array([o.pickup - o.ready for o in placed if o.pickup is not None], dtype=float)
    n = len(placed)
    shift = sum(max(0.0, c.off_time - c.on_time) for c in sim.couriers)
    busy = sum(c.busy_minutes for c in sim.couriers)
    comp = 0
    for c in sim.couriers:
        hours = max(0.0, c.off_time - c.on_time) / 60.0
        comp += max(sim.pay_per_order_cents * c.delivered, round(sim.pay_per_hour_cents * hours))
    sizes = [len(a.order_ids) for a in sim.assignments]
    return {
        "instance": sim.name,
        "dispatcher": getattr(sim.dispatcher, "name", type(sim.dispatcher).__name__),
        "seed": sim.seed,
        "orders_placed": n,
        "orders_delivered": len(delivered),
        "orders_undelivered": n - len(delivered),
        "click_to_door_mean": round(float(c2d.mean()), 3) if len(c2d) else None,
        "click_to_door_p90": round(float(np.percentile(c2d, 90)), 3) if len(c2d) else None,
        "orders_within_target": int((c2d <= sim.target).sum()),
        "share_within_target": round(float((c2d <= sim.target).sum()) / n, 4) if n else 0.0,
        "share_within_max": round(float((c2d <= sim.max_minutes).sum()) / n, 4) if n else 0.0,
        "ready_to_pickup_wait_mean": round(float(waits.mean()), 3) if len(waits) else None,
        "courier_utilisation": round(min(1.0, busy / shift), 4) if shift else 0.0,
        "courier_compensation": int(comp),
        "courier_compensation_usd": round(comp / 100, 2),
        "assignments": len(sim.assignments),
        "orders_per_assignment": round(float(np.mean(sizes)), 3) if sizes else 0.0,
        "rejected_assignments": len(sim.rejected),
        "end_minute": sim.now,
    }

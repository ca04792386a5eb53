"""How many orders of an MDRP day ANY dispatcher could deliver within the target: a per-order bound.

For each order, the earliest click-to-door that the MDRP rules allow, whatever else happens that day:

- the food leaves the restaurant no earlier than its ready time;
- some courier must be at the restaurant half the pickup service before the pickup: a courier exists
  from its on_time at its on-location, and no route reaches the restaurant sooner than the direct leg
  (a detour's legs, each rounded up, never sum to less than the direct leg rounded up);
- that courier must pick up at or before its off_time;
- then half the pickup service, the direct leg to the customer (a bundle's earlier drop-offs only
  delay it) and half the drop-off service.

So earliest pickup = min over couriers c of max(ready, on_c + travel(c, restaurant) + pickup/2),
over the couriers for which that is <= off_c, and earliest drop-off = earliest pickup + pickup/2 +
travel(restaurant, customer) + drop-off/2. Each order's figure is a lower bound on its click-to-door
in every feasible solution, so the number of orders whose figure is within the target bounds the
number any dispatcher delivers within it: where the baseline reaches it, a tie is the best possible.

Nothing here assumes how couriers are dispatched (the bound allows a courier to wait at a restaurant
before the order is placed, which the simulator never does), and it uses the weather-free travel
rule: it bounds plain MDRP days.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tools.world.mdrp import MdrpInstance


@dataclass(frozen=True, slots=True)
class OnTimeBound:
    orders: int  # orders in the day
    on_time: int  # orders whose earliest click-to-door is within the target
    ready_too_late: int  # late even with a courier waiting at the restaurant at ready time
    no_courier_in_time: int  # on time with a courier waiting there, but no courier can be there

    @property
    def share(self) -> float:
        return round(self.on_time / self.orders, 4) if self.orders else 0.0


def _travel(d: np.ndarray, meters_per_minute: float) -> np.ndarray:
    return np.ceil(d / meters_per_minute - 1e-9)


def earliest_click_to_door(inst: MdrpInstance) -> dict[str, tuple[float, float]]:
    """Per order id: (earliest click-to-door with a courier waiting at the restaurant, earliest
    click-to-door given where and when couriers exist); inf when no courier can pick it up."""
    p = inst.params
    half_p, half_d = p.pickup_service / 2, p.dropoff_service / 2
    rests = inst.restaurant_map()
    cx = np.array([c.x for c in inst.couriers], dtype=float)
    cy = np.array([c.y for c in inst.couriers], dtype=float)
    on = np.array([c.on_time for c in inst.couriers], dtype=float)
    off = np.array([c.off_time for c in inst.couriers], dtype=float)
    at_store: dict[str, np.ndarray] = {}  # restaurant -> each courier's earliest possible pickup there
    out: dict[str, tuple[float, float]] = {}
    for o in inst.orders:
        r = rests[o.restaurant]
        if r.id not in at_store:
            at_store[r.id] = on + _travel(np.hypot(cx - r.x, cy - r.y), p.meters_per_minute) + half_p
        pickup = np.maximum(at_store[r.id], o.ready)
        possible = pickup[pickup <= off]
        earliest_pickup = float(possible.min()) if len(possible) else np.inf
        leg = float(_travel(np.array(np.hypot(o.x - r.x, o.y - r.y)), p.meters_per_minute))
        after_pickup = half_p + leg + half_d - o.placement
        out[o.id] = (o.ready + after_pickup, earliest_pickup + after_pickup)
    return out


def on_time_bound(inst: MdrpInstance) -> OnTimeBound:
    """The most orders of the day that any dispatcher can deliver within the target (see module doc)."""
    target = inst.params.target
    earliest = earliest_click_to_door(inst).values()
    ready_late = sum(waiting > target for waiting, _ in earliest)
    on_time = sum(real <= target for _, real in earliest)
    return OnTimeBound(
        orders=len(inst.orders),
        on_time=on_time,
        ready_too_late=ready_late,
        no_courier_in_time=len(inst.orders) - on_time - ready_late,
    )

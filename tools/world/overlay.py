"""The seeded overlay: what an MDRP day lacks and the order-exception agent needs.

The Grubhub instances carry only where and when (orders, couriers, restaurants). An operator also
knows who ordered, what, for how much, and how valuable that customer is. This module invents those
facts deterministically from a seed, by a small documented generative model, so the same
``(instance, seed)`` always yields the same world:

- Customers: a pool of ``round(0.55 * orders)`` customers. Orders draw their customer with weights
  proportional to ``1 / rank**0.8`` (a Zipf-like law), so there are repeat customers today (a few order
  several times) and many one-off ones. A customer's home is the drop-off point of their first order.
- Purchase history (Purchase rows, the input of the LTV model): each customer's past purchase count is
  Poisson with a Gamma(shape 0.8, scale 6) rate (mean ~5, over-dispersed as real bases are), dates
  uniform over the 365 days before the day, amounts lognormal around $30.
- Tier from the last 12 months of spend: platinum >= $1,500, gold >= $600, silver >= $200, else bronze.
  Complaints ~ Poisson(0.3), refund claims ~ Poisson(0.15), compensations ~ Poisson(0.1).
- Menus (Sku rows): each restaurant gets 6-10 items ``<restaurant>-<k>`` in the categories
  mains/sides/drinks/desserts with category price ranges (mains $9-22, sides $3-8, drinks $1.50-4.50,
  desserts $4-9).
- Order lines: one main plus Poisson(1.2) extra items (capped at 4), quantities 1-2. The order value is
  the sum of its lines (integer cents), so value and lines always agree.
- Channel: app 80%, web 15%, phone 5%. Couriers: bike 60% (capacity 3), e-bike 25% (3), car 15% (4).

Nothing here depends on wall-clock time; all draws come from one ``numpy.random.Generator(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tools.world.mdrp import MdrpInstance

CATEGORIES: tuple[tuple[str, int, int], ...] = (
    ("mains", 900, 2200),
    ("sides", 300, 800),
    ("drinks", 150, 450),
    ("desserts", 400, 900),
)
DISHES = {
    "mains": ("Burger", "Burrito", "Pad thai", "Pizza", "Ramen", "Curry", "Poke bowl", "Salad"),
    "sides": ("Fries", "Dumplings", "Garlic bread", "Slaw", "Spring rolls"),
    "drinks": ("Cola", "Iced tea", "Lemonade", "Water", "Coffee"),
    "desserts": ("Brownie", "Cheesecake", "Ice cream", "Cookie"),
}
TIER_THRESHOLDS_CENTS = ((150_000, "platinum"), (60_000, "gold"), (20_000, "silver"))


def tier_for(spend_12m_cents: int) -> str:
    for threshold, tier in TIER_THRESHOLDS_CENTS:
        if spend_12m_cents >= threshold:
            return tier
    return "bronze"


@dataclass
class Overlay:
    customers: list[dict[str, Any]]
    purchases: list[dict[str, Any]]
    skus: list[dict[str, Any]]
    order_lines: list[dict[str, Any]]
    order_customer: list[str]
    order_value: list[int]
    order_channel: list[str]
    vehicles: list[str]
    capacities: list[int]
    seed: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"model": "tools.world.overlay", "seed": self.seed, **self.notes}


def purchase_history(
    rng: np.random.Generator, customer_id: str, epoch: datetime, *, rate_shape: float = 0.8, scale: float = 6.0
) -> tuple[list[dict[str, Any]], int]:
    """Past purchases of one customer and their spend over the last 12 months (cents)."""
    n = int(rng.poisson(rng.gamma(rate_shape, scale)))
    rows = []
    spend = 0
    if n:
        days = np.sort(rng.uniform(1, 365, size=n))[::-1]
        amounts = np.maximum(500, np.round(rng.lognormal(np.log(3000), 0.5, size=n))).astype(int)
        for d, a in zip(days, amounts, strict=True):
            rows.append(
                {
                    "customer_id": customer_id,
                    "purchased_at": epoch - timedelta(days=float(d)),
                    "amount_cents": int(a),
                    "quantity": 1,
                }
            )
            spend += int(a)
    return rows, spend


def build_menus(rng: np.random.Generator, store_ids: list[str]) -> tuple[list[dict[str, Any]], dict]:
    """Sku rows for every restaurant and, per store, the item ids by category."""
    skus: list[dict[str, Any]] = []
    menus: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for sid in store_ids:
        n = int(rng.integers(6, 11))
        # at least one item per category, the rest random
        cats = [c[0] for c in CATEGORIES] + [CATEGORIES[int(i)][0] for i in rng.integers(0, 4, size=n - 4)]
        menu: dict[str, list[tuple[str, int]]] = {c[0]: [] for c in CATEGORIES}
        bounds = {c[0]: (c[1], c[2]) for c in CATEGORIES}
        for k, cat in enumerate(cats, start=1):
            lo, hi = bounds[cat]
            price = int(rng.integers(lo // 10, hi // 10 + 1)) * 10 - 1
            dish = DISHES[cat][int(rng.integers(0, len(DISHES[cat])))]
            sku_id = f"{sid}-{k}"
            skus.append({"id": sku_id, "name": f"{dish} ({sid})", "category": cat, "price_cents": price})
            menu[cat].append((sku_id, price))
        menus[sid] = menu
    return skus, menus


def build_overlay(inst: MdrpInstance, *, seed: int, epoch: datetime) -> Overlay:
    rng = np.random.default_rng(seed)
    n_orders = len(inst.orders)
    n_customers = max(1, round(0.55 * n_orders))
    weights = 1.0 / np.arange(1, n_customers + 1) ** 0.8
    weights /= weights.sum()
    # the Zipf rank is shuffled so customer ids do not reveal who the heavy users are
    draw = rng.permutation(n_customers)[rng.choice(n_customers, size=n_orders, p=weights)]

    customers: list[dict[str, Any]] = []
    purchases: list[dict[str, Any]] = []
    home: dict[int, tuple[float, float]] = {}
    for i, c in enumerate(draw):
        home.setdefault(int(c), (inst.orders[i].x, inst.orders[i].y))
    used = sorted(home)
    complaints = rng.poisson(0.3, size=len(used))
    refunds = rng.poisson(0.15, size=len(used))
    comps = rng.poisson(0.1, size=len(used))
    channels = rng.choice(["app", "web", "phone"], size=len(used), p=[0.8, 0.15, 0.05])
    for j, c in enumerate(used):
        cid = f"cu{c + 1}"
        rows, spend = purchase_history(rng, cid, epoch)
        purchases.extend(rows)
        x, y = home[c]
        customers.append(
            {
                "id": cid,
                "name": f"Customer {c + 1}",
                "tier": tier_for(spend),
                "x": x,
                "y": y,
                "channel": str(channels[j]),
                "complaints_count": int(complaints[j]),
                "refund_claims_count": int(refunds[j]),
                "compensations_count": int(comps[j]),
            }
        )

    skus, menus = build_menus(rng, [r.id for r in inst.restaurants])
    lines: list[dict[str, Any]] = []
    values: list[int] = []
    for o in inst.orders:
        menu = menus[o.restaurant]
        picks = [menu["mains"][int(rng.integers(0, len(menu["mains"])))]]
        extra_cats = ("sides", "drinks", "desserts")
        for _ in range(min(3, int(rng.poisson(1.2)))):
            cat = extra_cats[int(rng.integers(0, 3))]
            picks.append(menu[cat][int(rng.integers(0, len(menu[cat])))])
        total = 0
        for sku_id, price in picks:
            qty = 1 + int(rng.random() < 0.25)
            lines.append({"order_id": o.id, "sku_id": sku_id, "quantity": qty, "unit_price_cents": price})
            total += qty * price
        values.append(total)
    order_channel = [str(c) for c in rng.choice(["app", "web", "phone"], size=n_orders, p=[0.8, 0.15, 0.05])]
    vehicles = [str(v) for v in rng.choice(["bike", "ebike", "car"], size=len(inst.couriers), p=[0.6, 0.25, 0.15])]
    return Overlay(
        customers=customers,
        purchases=purchases,
        skus=skus,
        order_lines=lines,
        order_customer=[f"cu{int(c) + 1}" for c in draw],
        order_value=values,
        order_channel=order_channel,
        vehicles=vehicles,
        capacities=[4 if v == "car" else 3 for v in vehicles],
        seed=seed,
        notes={"customers": len(customers), "repeat_customers": int(n_orders - len(customers))},
    )

"""A storm-like assignment problem without a database: for tests and when no world generator exists."""

from __future__ import annotations

import numpy as np

from tools.riders.problem import OrderJob, RiderState, SolverParams


def storm_like(
    *, seed: int = 0, n_orders: int = 278, n_riders: int = 32, n_stores: int = 10, now: float = 600.0
) -> tuple[list[OrderJob], list[RiderState], SolverParams]:
    """Orders placed in the last 30 minutes around dark stores, riders scattered, rain (factor 0.7)."""
    rng = np.random.default_rng(seed)
    stores = rng.uniform(0, 8000, size=(n_stores, 2))
    orders = []
    for i in range(n_orders):
        s = int(rng.integers(n_stores))
        placed = now - rng.uniform(0, 30)
        ready = placed + rng.uniform(5, 25)
        d = stores[s] + rng.normal(0, 1500, 2)
        orders.append(
            OrderJob(
                f"o{i}", f"s{s}", float(stores[s][0]), float(stores[s][1]), float(d[0]), float(d[1]), ready, placed + 40
            )
        )
    riders = []
    for j in range(n_riders):
        p = rng.uniform(0, 8000, 2)
        riders.append(
            RiderState(
                f"r{j}",
                float(p[0]),
                float(p[1]),
                free_at=now + rng.uniform(-5, 15),
                shift_end=now + rng.uniform(30, 240),
                capacity=3,
            )
        )
    return orders, riders, SolverParams(now=now, speed_factor=0.7)

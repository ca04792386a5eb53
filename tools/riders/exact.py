"""The exact optimum of one round of the assignment model, by MILP (HiGHS through scipy.optimize.milp).

Variables x[r, b] in {0, 1} for every feasible column with a positive benefit (a column whose cost
exceeds its orders' penalties is never in an optimum, so dropping it keeps the optimum). Constraints:
each order in at most one chosen column, each rider at most one column per round. Objective:
minimise sum(cost[r, b] x[r, b]) + sum over orders left out of their penalty, written as
sum(penalties) - sum(benefit[r, b] x[r, b]).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix

from tools.riders.columns import Columns


@dataclass(frozen=True, slots=True)
class RoundOptimum:
    objective: float  # best objective found
    lower_bound: float  # proven bound (equals objective when optimal)
    proven_optimal: bool
    unassigned_penalty: float  # penalty part of the best solution found
    choice: dict[int, int]  # rider index -> bundle index
    solve_ms: float


def solve_round_exact(cols: Columns, order_penalties: np.ndarray, time_limit_s: float = 10.0) -> RoundOptimum:
    t0 = time.perf_counter()
    benefit = cols.benefit
    total_penalty = float(order_penalties.sum())
    rr, bb = np.nonzero(np.isfinite(benefit) & (benefit > 0))
    if len(rr) == 0:
        return RoundOptimum(total_penalty, total_penalty, True, total_penalty, {}, 0.0)
    n_orders = cols.incidence.shape[1]
    n_riders = benefit.shape[0]
    rows: list[np.ndarray] = []
    colidx: list[np.ndarray] = []
    sizes = cols.size[bb]
    mem = cols.members[bb]
    rows.append(mem[mem >= 0])  # row-major: each column's orders in turn, matching the repeat below
    colidx.append(np.repeat(np.arange(len(rr)), sizes))
    rows.append(n_orders + rr)
    colidx.append(np.arange(len(rr)))
    data = np.ones(sum(len(r) for r in rows))
    a = csr_matrix((data, (np.concatenate(rows), np.concatenate(colidx))), shape=(n_orders + n_riders, len(rr)))
    c = -benefit[rr, bb]
    res = milp(
        c,
        constraints=LinearConstraint(a, -np.inf, 1.0),
        integrality=np.ones(len(rr)),
        bounds=Bounds(0, 1),
        options={"time_limit": time_limit_s, "disp": False},
    )
    ms = (time.perf_counter() - t0) * 1000
    if res.x is None:
        bound = total_penalty + float(res.mip_dual_bound) if res.mip_dual_bound is not None else -np.inf
        return RoundOptimum(total_penalty, bound, False, total_penalty, {}, ms)
    chosen = np.nonzero(res.x > 0.5)[0]
    choice = {int(rr[k]): int(bb[k]) for k in chosen}
    covered = np.zeros(n_orders, dtype=bool)
    for b in choice.values():
        covered[cols.members[b, : cols.size[b]]] = True
    objective = total_penalty + float(res.fun)
    bound = total_penalty + float(res.mip_dual_bound if res.mip_dual_bound is not None else res.fun)
    return RoundOptimum(
        objective=objective,
        lower_bound=min(bound, objective),
        proven_optimal=res.status == 0,
        unassigned_penalty=float(order_penalties[~covered].sum()),
        choice=choice,
        solve_ms=ms,
    )

"""The assignment model's columns: every (rider, same-store bundle) pair a plan may use, with its cost.

A column is one trip: the rider leaves where it becomes free (at ``max(now, free_at, shift_start)``),
travels to the store, picks the bundle up at ``max(arrival + pickup_service/2, latest ready time)``,
then drops the orders off in sequence, each drop-off ``dropoff_service`` after the previous arrival
plus travel (MDRP rules: travel = ceil(distance / (metres per minute x speed factor)), service time
split half before and half after each stop). A column is feasible when the pickup is no later than
the rider's shift end and the bundle fits the rider's free capacity (capacity - load).

Cost of a column = sum over its orders of max(0, drop-off - promise) minutes
                   + late_order_weight x (number of its orders dropped off after their promise)
                   + travel_weight x (travel minutes of the trip),
minimised over the drop-off sequences of the bundle (all permutations; bundles have <= 3 orders).
Candidate bundles: every order alone, plus same-store pairs and triples whose ready times lie within
``bundle_ready_window`` minutes of each other and whose drop-off detour is at most ``bundle_detour``
minutes; each order keeps its ``partners_per_order`` best partners. The heuristic and the exact MILP
use the same columns, so their objectives are comparable.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from tools.riders.problem import OrderJob, RiderState, SolverParams

INFEASIBLE = np.inf


def _tt(d: np.ndarray, speed: float) -> np.ndarray:
    return np.ceil(d / speed - 1e-9)


@dataclass
class Columns:
    """Columns of one round, grouped by bundle; arrays indexed [rider, bundle]."""

    bundles: list[tuple[int, ...]]  # order indices of each bundle (unordered)
    cost: np.ndarray  # (R, B) column cost, inf when infeasible
    perm: np.ndarray  # (R, B) index of the best drop-off sequence into sequences[b]
    pickup: np.ndarray  # (R, B) pickup minute
    sequences: list[np.ndarray]  # per bundle: (P, m) order indices in drop-off order
    offsets: list[np.ndarray]  # per bundle: (P, m) minutes from pickup to each drop-off
    end_offset: list[np.ndarray]  # per bundle: (P,) minutes from pickup until the rider is free again
    penalty: np.ndarray  # (B,) sum of unassigned penalties of the bundle's orders
    order_bundles: list[np.ndarray] = field(default_factory=list)  # per order: bundles containing it
    incidence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))  # (B, N)

    @property
    def benefit(self) -> np.ndarray:
        """Penalty avoided minus cost: what choosing a column gains (-inf when infeasible)."""
        return self.penalty[None, :] - self.cost


def candidate_bundles(orders: list[OrderJob], params: SolverParams) -> list[tuple[int, ...]]:
    """Singles, and same-store pairs/triples compatible by ready time and drop-off detour."""
    bundles: list[tuple[int, ...]] = [(i,) for i in range(len(orders))]
    if params.max_bundle < 2 or len(orders) < 2:
        return bundles
    speed = params.meters_per_minute * params.speed_factor
    by_store: dict[str, list[int]] = {}
    for i, o in enumerate(orders):
        by_store.setdefault(o.store_id, []).append(i)
    partners: dict[int, set[int]] = {}
    for idx in by_store.values():
        if len(idx) < 2:
            continue
        ix = np.array(idx)
        xs = np.array([orders[i].x for i in idx])
        ys = np.array([orders[i].y for i in idx])
        sx, sy = orders[idx[0]].store_x, orders[idx[0]].store_y
        ready = np.array([orders[i].ready for i in idx])
        direct = _tt(np.hypot(xs - sx, ys - sy), speed)
        between = _tt(np.hypot(xs[:, None] - xs[None, :], ys[:, None] - ys[None, :]), speed)
        # detour of serving j right after i instead of going to j directly
        detour = direct[:, None] + between - direct[None, :]
        detour = np.minimum(detour, detour.T)
        ok = (np.abs(ready[:, None] - ready[None, :]) <= params.bundle_ready_window) & (detour <= params.bundle_detour)
        np.fill_diagonal(ok, False)
        score = np.where(ok, detour, np.inf)
        k = min(params.partners_per_order, len(idx) - 1)
        best = np.argsort(score, axis=1)[:, :k]
        for a in range(len(idx)):
            for b in best[a]:
                if ok[a, b]:
                    i, j = int(ix[a]), int(ix[b])
                    partners.setdefault(i, set()).add(j)
                    partners.setdefault(j, set()).add(i)
    pairs = sorted({(min(i, j), max(i, j)) for i, js in partners.items() for j in js})
    bundles.extend(pairs)
    if params.max_bundle >= 3:
        triples = set()
        for i, j in pairs:
            for k in partners[i] & partners[j]:
                if k > j:
                    triples.add((i, j, k))
        bundles.extend(sorted(triples))
    return bundles


def build_columns(
    orders: list[OrderJob], riders: list[RiderState], params: SolverParams, penalties: np.ndarray
) -> Columns:
    """Cost, best sequence and pickup of every (rider, candidate bundle) column, vectorised by size."""
    bundles = candidate_bundles(orders, params)
    n, r_count = len(orders), len(riders)
    speed = params.meters_per_minute * params.speed_factor
    ps, ds = params.pickup_service, params.dropoff_service
    ox = np.array([o.x for o in orders], dtype=float)
    oy = np.array([o.y for o in orders], dtype=float)
    sx = np.array([o.store_x for o in orders], dtype=float)
    sy = np.array([o.store_y for o in orders], dtype=float)
    ready = np.array([o.ready for o in orders], dtype=float)
    promise = np.array([o.promise for o in orders], dtype=float)
    to_drop = _tt(np.hypot(ox - sx, oy - sy), speed)  # store -> own drop-off

    rx = np.array([r.x for r in riders], dtype=float)
    ry = np.array([r.y for r in riders], dtype=float)
    start = np.array([max(params.now, r.free_at, r.shift_start) for r in riders], dtype=float)
    shift_end = np.array([r.shift_end for r in riders], dtype=float)
    room = np.array([r.capacity - r.load for r in riders], dtype=float)
    # rider -> store of each order (orders of a bundle share the store)
    to_store = _tt(np.hypot(rx[:, None] - sx[None, :], ry[:, None] - sy[None, :]), speed)  # (R, N)

    b_count = len(bundles)
    cost = np.full((r_count, b_count), INFEASIBLE)
    perm_idx = np.zeros((r_count, b_count), dtype=np.int64)
    pickup = np.zeros((r_count, b_count))
    sequences: list[np.ndarray] = [np.zeros((0, 0), dtype=np.int64)] * b_count
    offsets: list[np.ndarray] = [np.zeros((0, 0))] * b_count
    end_offset: list[np.ndarray] = [np.zeros(0)] * b_count
    penalty = np.zeros(b_count)

    by_size: dict[int, list[int]] = {}
    for b, members in enumerate(bundles):
        by_size.setdefault(len(members), []).append(b)
    for m, bidx in by_size.items():
        mem = np.array([bundles[b] for b in bidx], dtype=np.int64)  # (nb, m)
        perms = np.array(list(itertools.permutations(range(m))), dtype=np.int64)  # (P, m)
        seq = mem[:, perms]  # (nb, P, m)
        delta = np.empty(seq.shape)
        delta[:, :, 0] = ps / 2 + to_drop[seq[:, :, 0]] + ds / 2
        route = to_drop[seq[:, :, 0]].astype(float)
        for k in range(1, m):
            a, b_ = seq[:, :, k - 1], seq[:, :, k]
            leg = _tt(np.hypot(ox[a] - ox[b_], oy[a] - oy[b_]), speed)
            delta[:, :, k] = delta[:, :, k - 1] + ds + leg
            route = route + leg
        end = delta[:, :, m - 1] + ds / 2  # (nb, P)
        first = mem[:, 0]
        latest_ready = ready[mem].max(axis=1)  # (nb,)
        arrive = start[:, None] + to_store[:, first]  # (R, nb)
        pick = np.maximum(arrive + ps / 2, latest_ready[None, :])  # (R, nb)
        drop = pick[:, :, None, None] + delta[None, :, :, :]  # (R, nb, P, m)
        late = np.maximum(drop - promise[seq][None, :, :, :], 0.0)
        c = late.sum(axis=3)
        if params.late_order_weight:
            c = c + params.late_order_weight * (late > 0).sum(axis=3)
        c = c + params.travel_weight * (to_store[:, first][:, :, None] + route[None, :, :])
        best = c.argmin(axis=2)  # (R, nb)
        best_cost = np.take_along_axis(c, best[:, :, None], axis=2)[:, :, 0]
        feasible = (pick <= shift_end[:, None] + 1e-9) & (room[:, None] >= m)
        cols = np.array(bidx)
        cost[:, cols] = np.where(feasible, best_cost, INFEASIBLE)
        perm_idx[:, cols] = best
        pickup[:, cols] = pick
        penalty[cols] = penalties[mem].sum(axis=1)
        for j, b in enumerate(bidx):
            sequences[b] = seq[j]
            offsets[b] = delta[j]
            end_offset[b] = end[j]

    order_bundles_l: list[list[int]] = [[] for _ in range(n)]
    incidence = np.zeros((b_count, n), dtype=bool)
    for b, members_t in enumerate(bundles):
        for i in members_t:
            order_bundles_l[i].append(b)
            incidence[b, i] = True
    return Columns(
        bundles=bundles,
        cost=cost,
        perm=perm_idx,
        pickup=pickup,
        sequences=sequences,
        offsets=offsets,
        end_offset=end_offset,
        penalty=penalty,
        order_bundles=[np.array(x, dtype=np.int64) for x in order_bundles_l],
        incidence=incidence,
    )

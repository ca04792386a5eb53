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

Everything is computed with whole-array numpy operations (one travel matrix per call for the
candidate pairs, travel legs only within bundles, one block per bundle size); the per-bundle
sequences are stored padded so that no Python loop runs over bundles.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from tools.riders.problem import OrderJob, RiderState, SolverParams

INFEASIBLE = np.inf
MAX_SIZE = 3
_PERMS = {m: np.array(list(itertools.permutations(range(m))), dtype=np.int64) for m in range(1, MAX_SIZE + 1)}
_NPERM = len(_PERMS[MAX_SIZE])


def _tt(d: np.ndarray, speed: float) -> np.ndarray:
    return np.ceil(d / speed - 1e-9)


@dataclass
class Columns:
    """Columns of one round; arrays indexed [rider, bundle]. Bundles: singles first (bundle i = order i)."""

    members: np.ndarray  # (B, 3) order indices of each bundle, padded with -1
    size: np.ndarray  # (B,) orders per bundle
    cost: np.ndarray  # (R, B) column cost, inf when infeasible
    perm: np.ndarray  # (R, B) index of the best drop-off sequence of the bundle
    pickup: np.ndarray  # (R, B) pickup minute
    seq: np.ndarray  # (B, 6, 3) order indices in drop-off order per sequence (padded with -1)
    offsets: np.ndarray  # (B, 6, 3) minutes from pickup to each drop-off
    end_offset: np.ndarray  # (B, 6) minutes from pickup until the rider is free again
    penalty: np.ndarray  # (B,) sum of unassigned penalties of the bundle's orders
    incidence: np.ndarray  # (B, N) bool: bundle b contains order i
    index: dict[tuple[int, ...], int]  # sorted member tuple -> bundle index

    @property
    def bundles(self) -> list[tuple[int, ...]]:
        return [tuple(row[:s]) for row, s in zip(self.members.tolist(), self.size.tolist(), strict=True)]

    @property
    def benefit(self) -> np.ndarray:
        """Penalty avoided minus cost: what choosing a column gains (-inf when infeasible)."""
        return self.penalty[None, :] - self.cost

    def trip(self, r: int, b: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(order indices in drop-off order, minutes from pickup to each drop-off, minutes to free)."""
        p, m = int(self.perm[r, b]), int(self.size[b])
        return self.seq[b, p, :m], self.offsets[b, p, :m], float(self.end_offset[b, p])


def candidate_bundles(orders: list[OrderJob], params: SolverParams) -> np.ndarray:
    """(B, 3) member indices padded with -1: singles, then same-store pairs, then triples."""
    n = len(orders)
    singles = np.full((n, MAX_SIZE), -1, dtype=np.int64)
    singles[:, 0] = np.arange(n)
    if params.max_bundle < 2 or n < 2:
        return singles
    speed = params.meters_per_minute * params.speed_factor
    codes: dict[str, int] = {}
    store = np.array([codes.setdefault(o.store_id, len(codes)) for o in orders], dtype=np.int64)
    xs = np.array([o.x for o in orders], dtype=float)
    ys = np.array([o.y for o in orders], dtype=float)
    sx = np.array([o.store_x for o in orders], dtype=float)
    sy = np.array([o.store_y for o in orders], dtype=float)
    ready = np.array([o.ready for o in orders], dtype=float)
    direct = _tt(np.hypot(xs - sx, ys - sy), speed)
    # travel between every two drop-offs, one broadcast: only same-store pairs may bundle and ``ok``
    # masks the others out, but picking the same-store pairs out first (a 2-D nonzero, four gathers
    # and a scatter) cost more than the whole matrix does, three times more on the storm (one store)
    between = _tt(np.hypot(xs[:, None] - xs[None, :], ys[:, None] - ys[None, :]), speed)
    # detour of serving j right after i instead of going to j directly (the better order of the two)
    detour = direct[:, None] + between - direct[None, :]
    detour = np.minimum(detour, detour.T)
    ok = (
        (store[:, None] == store[None, :])
        & (np.abs(ready[:, None] - ready[None, :]) <= params.bundle_ready_window)
        & (detour <= params.bundle_detour)
    )
    np.fill_diagonal(ok, False)
    k = min(params.partners_per_order, n - 1)
    score = np.where(ok, detour, np.inf)
    best = np.argpartition(score, k - 1, axis=1)[:, :k] if k < n else np.argsort(score, axis=1)
    partner = np.zeros((n, n), dtype=bool)
    rows = np.repeat(np.arange(n), best.shape[1])
    keep = ok[rows, best.ravel()]
    partner[rows[keep], best.ravel()[keep]] = True
    partner |= partner.T
    upper = np.triu(partner, 1)  # partners j > i of each i
    # 2-D nonzero walks a multi-index iterator; the flat one and a divmod give the same pairs, 8x faster
    pi, pj = np.divmod(np.flatnonzero(upper), n)
    pairs = np.full((len(pi), MAX_SIZE), -1, dtype=np.int64)
    pairs[:, 0], pairs[:, 1] = pi, pj
    out = [singles, pairs]
    if params.max_bundle >= 3 and len(pi):
        common = upper[pi] & upper[pj]  # (pairs, N): k > j > i partners with both i and j
        t, kk = np.divmod(np.flatnonzero(common), n)
        triples = np.stack([pi[t], pj[t], kk], axis=1)
        out.append(triples)
    return np.concatenate(out)


def build_columns(
    orders: list[OrderJob], riders: list[RiderState], params: SolverParams, penalties: np.ndarray
) -> Columns:
    """Cost, best sequence and pickup of every (rider, candidate bundle) column, vectorised by size."""
    members = candidate_bundles(orders, params)
    size = (members >= 0).sum(axis=1)
    n, r_count, b_count = len(orders), len(riders), len(members)
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

    cost = np.full((r_count, b_count), INFEASIBLE)
    perm_idx = np.zeros((r_count, b_count), dtype=np.int64)
    pickup = np.zeros((r_count, b_count))
    seq_all = np.full((b_count, _NPERM, MAX_SIZE), -1, dtype=np.int64)
    off_all = np.zeros((b_count, _NPERM, MAX_SIZE))
    end_all = np.zeros((b_count, _NPERM))
    pen = np.where(members >= 0, penalties[np.maximum(members, 0)], 0.0).sum(axis=1)

    lo = 0
    for m in range(1, MAX_SIZE + 1):
        hi = lo + int((size == m).sum())
        if hi == lo:
            continue
        mem = members[lo:hi, :m]  # (nb, m): blocks are contiguous, ordered by size
        perms = _PERMS[m]
        seq = mem[:, perms]  # (nb, P, m)
        delta = np.empty(seq.shape)
        delta[:, :, 0] = ps / 2 + to_drop[seq[:, :, 0]] + ds / 2
        route = to_drop[seq[:, :, 0]]
        for k in range(1, m):
            a, b = seq[:, :, k - 1], seq[:, :, k]
            leg = _tt(np.hypot(ox[a] - ox[b], oy[a] - oy[b]), speed)
            delta[:, :, k] = delta[:, :, k - 1] + ds + leg
            route = route + leg
        first = mem[:, 0]
        latest_ready = ready[mem].max(axis=1)  # (nb,)
        to_first = to_store[:, first]  # (R, nb)
        pick = np.maximum(start[:, None] + to_first + ps / 2, latest_ready[None, :])  # (R, nb)
        # lateness summed over the bundle's stops one stop at a time, laid out (P, R, nb): the long
        # bundle axis innermost (with P innermost, each ufunc ran R x nb inner loops of 2 or 6)
        slack = np.ascontiguousarray((delta - promise[seq]).transpose(2, 1, 0))  # (m, P, nb)
        c = np.zeros((len(perms),) + pick.shape)
        n_late = np.zeros(c.shape, dtype=np.int64) if params.late_order_weight else None
        for k in range(m):
            late = np.maximum(pick[None, :, :] + slack[k][:, None, :], 0.0)
            c += late
            if n_late is not None:
                n_late += late > 0
        if n_late is not None:
            c += params.late_order_weight * n_late
        c += params.travel_weight * (to_first[None, :, :] + np.ascontiguousarray(route.T)[:, None, :])
        if np.isnan(c).any():  # argmin's rule for NaN, the first wins (e.g. an infinite weight x 0 lates)
            best = c.argmin(axis=0)
            best_cost = np.take_along_axis(c, best[None, :, :], axis=0)[0]
        else:
            # the first cheapest sequence, like argmin, one (R, nb) slice at a time
            # (argmin along a short axis costs more)
            best = np.zeros(pick.shape, dtype=np.int64)  # (R, nb)
            best_cost = c[0].copy()
            for p in range(1, len(perms)):
                better = c[p] < best_cost
                best[better] = p
                np.minimum(best_cost, c[p], out=best_cost)
        feasible = (pick <= shift_end[:, None] + 1e-9) & (room[:, None] >= m)
        np.copyto(cost[:, lo:hi], best_cost, where=feasible)  # the rest stays INFEASIBLE
        perm_idx[:, lo:hi] = best
        pickup[:, lo:hi] = pick
        seq_all[lo:hi, : len(perms), :m] = seq
        off_all[lo:hi, : len(perms), :m] = delta
        end_all[lo:hi, : len(perms)] = delta[:, :, m - 1] + ds / 2
        lo = hi

    incidence = np.zeros((b_count, n), dtype=bool)
    rows = np.repeat(np.arange(b_count), MAX_SIZE)
    flat = members.ravel()
    incidence[rows[flat >= 0], flat[flat >= 0]] = True
    # sorted member tuple -> bundle, built per size block (bundles are ordered by size)
    index: dict[tuple[int, ...], int] = {}
    lo = 0
    for m in range(1, MAX_SIZE + 1):
        hi = lo + int((size == m).sum())
        index.update(zip(zip(*members[lo:hi, :m].T.tolist(), strict=True), range(lo, hi), strict=True))
        lo = hi
    return Columns(
        members=members,
        size=size,
        cost=cost,
        perm=perm_idx,
        pickup=pickup,
        seq=seq_all,
        offsets=off_all,
        end_offset=end_all,
        penalty=pen,
        incidence=incidence,
        index=index,
    )

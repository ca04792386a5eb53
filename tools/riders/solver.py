"""Assign orders to riders so that as few minutes as possible are lost against each order's promise.

The model (one round = each rider's next trip; ``rounds`` > 1 chains trips, the rider starting the
next one where and when the previous trip ends):

    minimise  sum over chosen (rider, bundle) columns of
                  sum_i max(0, dropoff_i - promise_i)            lateness in minutes
                + late_order_weight * #(orders dropped off late)  (0 unless asked)
                + travel_weight * travel minutes of the trip      (0.01: a tie-breaker)
            + sum over orders left unassigned of
                  unassigned_penalty + priority_weight * priority (1000 + 100 x priority)

    subject to: each order in at most one trip; each rider at most one trip per round;
                a trip's bundle has <= capacity - load orders, all from one store;
                the pickup happens no later than the rider's shift end.

Timing follows the MDRP rules (see ``tools.riders.columns``). A bundle's drop-off sequence is the
cheapest permutation. Bundles come from a candidate set (singles + compatible same-store pairs and
triples), the same set for the heuristic and the exact check.

The fast solver is a heuristic on those columns: greedy by benefit (penalty avoided minus cost),
then local search (each rider moves to its best column that conflicts with nobody), then an optimal
re-matching of the chosen bundles to riders by ``scipy.optimize.linear_sum_assignment``, repeated
until nothing improves. ``exact=True`` also solves every round's model to optimality with a MILP
(HiGHS) on the same input and reports the optimum, the proven lower bound and the gap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.riders.columns import Columns, build_columns
from tools.riders.exact import solve_round_exact
from tools.riders.problem import (
    ExactCheck,
    OrderJob,
    PlannedOrder,
    PlannedTrip,
    RiderState,
    Solution,
    SolverParams,
    Unassigned,
    UnassignedReason,
)

__all__ = ["OrderJob", "RiderState", "SolverParams", "Solution", "solve_assignment"]

_EPS = 1e-7


def order_penalties(orders: Sequence[OrderJob], params: SolverParams) -> np.ndarray:
    return np.array(
        [params.unassigned_penalty + params.priority_weight * max(o.priority, 0) for o in orders],
        dtype=float,
    )


def _greedy(benefit: np.ndarray, cols: Columns) -> np.ndarray:
    """Take the best remaining column until none gains anything; returns rider -> bundle (-1 = none)."""
    g = np.where(benefit > _EPS, benefit, -np.inf)
    choice = np.full(g.shape[0], -1, dtype=np.int64)
    n_bundles = g.shape[1]
    while True:
        flat = int(np.argmax(g))
        r, b = divmod(flat, n_bundles)
        if not np.isfinite(g[r, b]):
            return choice
        choice[r] = b
        g[r, :] = -np.inf
        for i in cols.bundles[b]:
            g[:, cols.order_bundles[i]] = -np.inf


def _local_search(benefit: np.ndarray, cols: Columns, choice: np.ndarray, max_passes: int = 6) -> bool:
    """Move each rider to its best column free of other riders' orders; True when anything moved."""
    owner = np.full(cols.incidence.shape[1], -1, dtype=np.int64)
    for r, b in enumerate(choice):
        if b >= 0:
            owner[list(cols.bundles[b])] = r
    # taken[b] = how many of bundle b's orders some rider holds
    inc_t = np.ascontiguousarray(cols.incidence.T, dtype=np.int64)
    taken = inc_t[owner >= 0].sum(axis=0)
    moved_any = False
    for _ in range(max_passes):
        moved = False
        for r in range(benefit.shape[0]):
            cur = int(choice[r])
            own = np.asarray(cols.bundles[cur]) if cur >= 0 else np.zeros(0, dtype=np.int64)
            free = taken - inc_t[own].sum(axis=0) == 0
            cand = np.where(free, benefit[r], -np.inf)
            best = int(np.argmax(cand))
            cur_val = benefit[r, cur] if cur >= 0 else 0.0
            if cand[best] > max(cur_val, 0.0) + 1e-6:
                if cur >= 0:
                    owner[own] = -1
                    for i in own:
                        taken[cols.order_bundles[i]] -= 1
                for i in cols.bundles[best]:
                    owner[i] = r
                    taken[cols.order_bundles[i]] += 1
                choice[r] = best
                moved = moved_any = True
        if not moved:
            break
    return moved_any


def _eject(benefit: np.ndarray, cols: Columns, choice: np.ndarray, top: int = 6) -> bool:
    """Rider r takes a column that clashes with exactly one other rider q, q moves to its best free
    column; applied when the pair gains. Tries each rider's ``top`` best clashing columns."""
    inc_t = np.ascontiguousarray(cols.incidence.T, dtype=np.int64)  # (N, B): rows are cheap to sum
    owner = np.full(inc_t.shape[0], -1, dtype=np.int64)
    for r, b in enumerate(choice):
        if b >= 0:
            owner[list(cols.bundles[b])] = r
    taken = inc_t[owner >= 0].sum(axis=0)
    zero = np.zeros(inc_t.shape[1], dtype=np.int64)
    cache: dict[int, np.ndarray] = {}

    def held(b: int) -> np.ndarray:
        if b < 0:
            return zero
        if b not in cache:
            cache[b] = inc_t[list(cols.bundles[b])].sum(axis=0)
        return cache[b]

    improved = False
    for r in range(benefit.shape[0]):
        cur = int(choice[r])
        cur_val = benefit[r, cur] if cur >= 0 else 0.0
        cand = np.nonzero(benefit[r] > cur_val + 1e-6)[0]
        if len(cand) == 0:
            continue
        cand = cand[np.argsort(-benefit[r, cand])[: top * 3]]
        tried = 0
        for b in cand:
            others = {int(owner[i]) for i in cols.bundles[b]} - {-1, r}
            if len(others) != 1:
                continue
            tried += 1
            q = others.pop()
            qcur = int(choice[q])
            # q may use columns free of every order held by riders other than q and r, and of b
            clash = taken - held(qcur) - held(cur) + held(int(b))
            qvals = np.where(clash > 0, -np.inf, benefit[q])
            qb = int(np.argmax(qvals))
            qnew = max(float(qvals[qb]), 0.0)
            gain = benefit[r, b] - cur_val + qnew - benefit[q, qcur]
            if gain > 1e-6:
                for bb in (qcur, cur):
                    if bb >= 0:
                        owner[list(cols.bundles[bb])] = -1
                owner[list(cols.bundles[b])] = r
                choice[r] = b
                choice[q] = qb if qvals[qb] > 0 else -1
                if choice[q] >= 0:
                    owner[list(cols.bundles[qb])] = q
                taken = inc_t[owner >= 0].sum(axis=0)
                improved = True
                break
            if tried >= top:
                break
    return improved


def _rematch(cols: Columns, choice: np.ndarray) -> bool:
    """Give the chosen bundles to riders optimally (a linear assignment); True when it changed."""
    chosen = choice[choice >= 0]
    if len(chosen) == 0:
        return False
    sub = cols.cost[:, chosen]
    big = 1e9
    rows, cs = linear_sum_assignment(np.where(np.isfinite(sub), sub, big))
    if (sub[rows, cs] >= big).any():
        return False
    before = float(sum(cols.cost[r, b] for r, b in enumerate(choice) if b >= 0))
    after = float(sub[rows, cs].sum())
    if after >= before - 1e-6:
        return False
    choice[:] = -1
    choice[rows] = chosen[cs]
    return True


def _solve_round(cols: Columns) -> np.ndarray:
    benefit = cols.benefit
    choice = _greedy(benefit, cols)
    for _ in range(3):
        _local_search(benefit, cols, choice)
        _rematch(cols, choice)
        if not _eject(benefit, cols, choice):
            break
    return choice


def _round_objective(cols: Columns, choice: np.ndarray, penalties: np.ndarray) -> float:
    covered = np.zeros(len(penalties), dtype=bool)
    total = 0.0
    for r, b in enumerate(choice):
        if b >= 0:
            total += float(cols.cost[r, b])
            covered[list(cols.bundles[b])] = True
    return total + float(penalties[~covered].sum())


def _reason(
    i: int, first_cols: Columns | None, first_benefit: np.ndarray | None, riders: Sequence[RiderState]
) -> tuple[UnassignedReason, str]:
    if not riders:
        return "no_candidate_riders", "no rider was given or matched the filters"
    if all(r.capacity - r.load < 1 for r in riders):
        return "riders_full", f"all {len(riders)} candidate riders already carry their capacity"
    assert first_cols is not None and first_benefit is not None
    single = i  # singles come first in the candidate list: bundle i is order i alone
    feasible = np.isfinite(first_cols.cost[:, single])
    if not feasible.any():
        return "no_rider_in_time", "no rider with room can reach the store before its shift ends"
    if not (first_benefit[:, single] > _EPS).any():
        return "not_worth_assigning", "every feasible trip costs more than the unassigned penalty"
    return (
        "capacity_exhausted",
        f"{int(feasible.sum())} riders could take it, but their capacity went to other orders",
    )


def solve_assignment(
    orders: Sequence[OrderJob],
    riders: Sequence[RiderState],
    params: SolverParams,
    *,
    rounds: int = 1,
    exact: bool = False,
    exact_time_limit_s: float = 10.0,
) -> Solution:
    """Plan up to ``rounds`` trips per rider for ``orders``; see the module docstring for the model."""
    t0 = time.perf_counter()
    orders = list(orders)
    state = list(riders)
    remaining = list(range(len(orders)))
    penalties_all = order_penalties(orders, params)
    planned: dict[str, PlannedOrder] = {}
    trips: list[PlannedTrip] = []
    first_cols: Columns | None = None
    n_columns = 0
    heur_objs: list[float] = []
    exact_ms = 0.0
    opt_total = bound_total = opt_pen_total = 0.0
    proven = True
    done_rounds = 0
    for rnd in range(1, rounds + 1):
        if not remaining or not state:
            break
        sub = [orders[i] for i in remaining]
        pen = penalties_all[remaining]
        round_params = params
        cols = build_columns(sub, state, round_params, pen)
        if first_cols is None:
            first_cols = cols
        n_columns += int(np.isfinite(cols.cost).sum())
        choice = _solve_round(cols)
        done_rounds = rnd
        heur_objs.append(_round_objective(cols, choice, pen))
        if exact:
            t_ex = time.perf_counter()
            opt = solve_round_exact(cols, pen, exact_time_limit_s)
            exact_ms += (time.perf_counter() - t_ex) * 1000
            opt_total += opt.objective
            bound_total += opt.lower_bound
            opt_pen_total += opt.unassigned_penalty
            proven = proven and opt.proven_optimal
        if (choice < 0).all():
            break
        taken: set[int] = set()
        new_state = list(state)
        for r, b in enumerate(choice):
            if b < 0:
                continue
            rider = state[r]
            p = int(cols.perm[r, b])
            seq = cols.sequences[b][p]
            pick = float(cols.pickup[r, b])
            drops = pick + cols.offsets[b][p]
            ids = tuple(sub[k].id for k in seq)
            for k, dmin in zip(seq, drops, strict=True):
                o = sub[k]
                planned[o.id] = PlannedOrder(
                    order_id=o.id,
                    rider_id=rider.id,
                    bundle=ids,
                    round=rnd,
                    pickup=pick,
                    dropoff=float(dmin),
                    promise=o.promise,
                    lateness=max(0.0, float(dmin) - o.promise),
                )
                taken.add(remaining[k])
            last = sub[int(seq[-1])]
            end = pick + float(cols.end_offset[b][p])
            trips.append(
                PlannedTrip(
                    rider_id=rider.id,
                    order_ids=ids,
                    round=rnd,
                    start=max(params.now, rider.free_at, rider.shift_start),
                    pickup=pick,
                    dropoffs=tuple(float(d) for d in drops),
                    end=end,
                    end_x=last.x,
                    end_y=last.y,
                    cost=float(cols.cost[r, b]),
                )
            )
            # the bag is empty after the trip: the next round starts there, then, with full room
            new_state[r] = RiderState(
                id=rider.id,
                x=last.x,
                y=last.y,
                free_at=end,
                shift_end=rider.shift_end,
                capacity=rider.capacity,
                load=0,
                shift_start=rider.shift_start,
            )
        state = new_state
        remaining = [i for i in remaining if i not in taken]

    unassigned = []
    first_benefit = first_cols.benefit if first_cols is not None else None
    for i in remaining:
        reason, detail = _reason(i, first_cols, first_benefit, riders)
        unassigned.append(Unassigned(order_id=orders[i].id, reason=reason, detail=detail))
    penalty = float(penalties_all[remaining].sum())
    trip_cost = sum(t.cost for t in trips)
    objective = trip_cost + penalty
    solve_ms = (time.perf_counter() - t0) * 1000 - exact_ms
    check = None
    if exact:
        # rounds after the last one run have nothing left to cost: their penalty is the remainder
        service = max(bound_total - opt_pen_total, 1.0)
        heur_total = sum(heur_objs)
        check = ExactCheck(
            optimum=opt_total,
            lower_bound=bound_total,
            gap_pct=100.0 * max(heur_total - bound_total, 0.0) / service,
            proven_optimal=proven,
            solve_ms=exact_ms,
        )
    return Solution(
        planned=planned,
        trips=trips,
        unassigned=unassigned,
        objective=objective,
        lateness_minutes=float(sum(p.lateness for p in planned.values())),
        penalty=penalty,
        solve_ms=solve_ms,
        rounds=done_rounds,
        columns=n_columns,
        exact=check,
        round_objectives=heur_objs,
    )

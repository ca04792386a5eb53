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

The fast solver is a heuristic on those columns. It starts from the linear-assignment relaxation
(``scipy.optimize.linear_sum_assignment``: each rider its best bundle, bundles distinct but allowed
to share orders), keeps the non-overlapping bundles greedily and matches them to riders optimally,
then improves until nothing gains: relocate (a rider moves to its best column free of other riders'
orders), split (a rider hands part of its bundle to an idle rider), extend (re-assign all riders over
the chosen bundles plus those made of unassigned orders), rematch (optimal assignment of the chosen
bundles) and eject (a rider takes a column clashing with one other rider, who moves elsewhere).
``exact=True`` also solves every round's model to optimality with a MILP (HiGHS) on the same input
and reports the optimum, the proven lower bound and the gap. The gap is measured against the
service part of the objective (trip costs, i.e. lateness and travel, of the MILP optimum), not the
whole objective: the unassigned penalties (1000 per order) would make any gap look negligible.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.riders import moves
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
# the largest overlap matrix a search allocates (~5,800 candidate bundles); beyond, rows are computed when used
HELD_MATRIX_BYTES = 64 * 2**20


def order_penalties(orders: Sequence[OrderJob], params: SolverParams) -> np.ndarray:
    return np.array(
        [params.unassigned_penalty + params.priority_weight * max(o.priority, 0) for o in orders],
        dtype=float,
    )


class _Search:
    """The heuristic's state on one round's columns: rider -> bundle, order -> rider."""

    def __init__(self, cols: Columns) -> None:
        self.cols = cols
        ben = cols.benefit
        self.ben = np.where(np.isfinite(ben) & (ben > _EPS), ben, -np.inf)
        self.members = [tuple(row[:s]) for row, s in zip(cols.members.tolist(), cols.size.tolist(), strict=True)]
        self.inc_t = np.ascontiguousarray(cols.incidence.T)  # (N, B)
        r_count, n = self.ben.shape[0], self.inc_t.shape[0]
        b_count = self.inc_t.shape[1]
        self.choice = np.full(r_count, -1, dtype=np.int64)
        # order -> rider holding it; one slot more, always -1, that the padding of ``mem_pad`` points at
        self._owner_ext = np.full(n + 1, -1, dtype=np.int64)
        self.mem_pad = np.ascontiguousarray(np.where(cols.members >= 0, cols.members, n))  # (B, 3)
        # overlap rows (tools.riders.moves.held_row), filled on first use; row B ("no bundle") stays
        # zero. np.empty: every other row is written before it is read, and zeroing (B+1) x B int16
        # costs a store per byte. A problem too big for the matrix gets a (0, B) array: rows are then
        # computed when needed, into ``_scratch`` (the same values, slower)
        self._inc_ext = np.empty((n + 1, b_count), dtype=np.int16)
        self._inc_ext[:n] = self.inc_t
        self._inc_ext[n] = 0
        fits = (b_count + 1) * b_count * 2 <= HELD_MATRIX_BYTES
        self._held = np.empty((b_count + 1 if fits else 0, b_count), dtype=np.int16)
        if fits:
            self._held[b_count] = 0
        self._have = np.zeros(b_count + 1, dtype=bool)
        self._have[b_count] = True
        self._scratch = np.zeros((3, b_count), dtype=np.int16)
        # (B,) how many of each bundle's orders some rider holds, kept up to date by set(): the chosen
        # bundles are disjoint, so their overlap rows add up to it
        self.cnt = np.zeros(b_count, dtype=np.int16)
        # each rider's best column anywhere: an upper bound that lets moves skip what cannot gain
        self.best = self.ben.max(axis=1, initial=-np.inf) if self.ben.size else np.full(r_count, -np.inf)
        # once rather than per call: what the linear assignments of _assign maximise (0 where
        # infeasible; the benefits are > _EPS or -inf) and the bundles some rider may take
        self.gain = np.maximum(self.ben, 0.0)
        self.takeable = np.isfinite(self.ben).any(axis=0)
        # set() counts changes; a move that looked at rider r and found nothing remembers the count,
        # and is not tried for r again until something changed (the same state gives the same answer)
        self._version = np.zeros(1, dtype=np.int64)
        self._idle_at = {move: np.full(r_count, -1, dtype=np.int64) for move in ("relocate", "eject")}
        # eject's candidates per top: each rider's best columns (3 x top), for the column in cand_cur
        # split's cuts of a bundle in two (moves.split), filled for the bundles split can meet
        self._size = np.ascontiguousarray(cols.size, dtype=np.int64)
        self._parts = np.full((b_count, 6, 2), -1, dtype=np.int64)
        self._parts_done = np.zeros(b_count, dtype=bool)
        self._cand: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def version(self) -> int:
        return int(self._version[0])

    @property
    def _state(self) -> tuple[np.ndarray, ...]:
        """The state every compiled move takes and changes in place (``moves``' order)."""
        return (
            self.choice,
            self._owner_ext,
            self.cnt,
            self._version,
            self._held,
            self._have,
            self._inc_ext,
            self.mem_pad,
            self._scratch,
        )

    # ---------------------------------------------------------------- bookkeeping
    def value(self) -> float:
        return float(sum(self.ben[r, b] for r, b in enumerate(self.choice) if b >= 0))

    def set(self, r: int, b: int) -> None:
        moves.set_choice(r, b, self._state)

    # ---------------------------------------------------------------- moves
    def relocate(self, max_passes: int = 6) -> bool:
        """Each rider moves to its best column free of other riders' orders (compiled: moves.relocate)."""
        if self.ben.shape[1] == 0:
            return False
        return bool(moves.relocate(max_passes, self.ben, self.best, self._idle_at["relocate"], self._state))

    def split(self) -> bool:
        """A rider hands part of its bundle to an idle rider when the two trips gain together (e.g.
        two orders each on time alone instead of one late in a pair, when riders are plentiful;
        compiled: moves.split)."""
        if (self.choice >= 0).all():
            return False  # no idle rider to hand anything to (the storm: riders are short)
        # the cuts of every bundle the move can meet: the chosen ones and the pairs they cut into
        todo = [int(b) for b in self.choice if b >= 0]
        while todo:
            b = todo.pop()
            if self._parts_done[b] or len(self.members[b]) < 2:
                continue
            self._parts_done[b] = True
            mem = self.members[b]
            k = 0
            for n_keep in range(1, len(mem)):
                for part in itertools.combinations(mem, n_keep):
                    rest = tuple(i for i in mem if i not in part)
                    b1, b2 = self.cols.index.get(part), self.cols.index.get(rest)
                    if b1 is None or b2 is None:
                        continue
                    self._parts[b, k] = (b1, b2)
                    k += 1
                    todo.extend((b1, b2))
        return bool(moves.split(self.ben, self._size, self._parts, self._state))

    def eject(self, top: int = 12) -> bool:
        """Rider r takes a column that clashes with exactly one other rider q, q moves to its best free
        column; applied when the pair gains. Tries each rider's ``top`` best clashing columns, in
        order of r's benefit (ties in column order), and applies the first that gains (compiled:
        moves.eject). ``top`` = 12 rather than 6: on the storm preset and the ten ``storm_like``
        problems the mean gap to the MILP optimum fell from 2.6% to 1.2% (the worst from 6.8% to
        3.9%, none worse); 24 was no better."""
        if self.ben.shape[1] == 0:
            return False
        cand = self._cand.get(top)
        if cand is None:
            r_count = self.ben.shape[0]
            cand = self._cand[top] = (
                np.zeros((r_count, 3 * top), dtype=np.int64),
                np.zeros(r_count, dtype=np.int64),
                np.full(r_count, -2, dtype=np.int64),  # -2: not computed yet (-1 is "no column")
            )
        return bool(moves.eject(top, self.ben, self._idle_at["eject"], *cand, self._state))

    def extend(self) -> bool:
        """Re-assign every rider at once over the chosen bundles plus the bundles made only of
        unassigned orders (a linear assignment, so chains of riders handing bundles on are found);
        new bundles that overlap are kept greedily, then the kept set is matched optimally again."""
        # bundles of unassigned orders only: cnt is 0 exactly there
        fresh = (self.cnt == 0) & self.takeable
        pool = np.concatenate([self.choice[self.choice >= 0], np.nonzero(fresh)[0]])
        if len(pool) == 0:
            return False
        rows, cs = self._assign(pool)
        picked = sorted(
            ((float(self.ben[r, pool[c]]), int(pool[c])) for r, c in zip(rows, cs, strict=True)), reverse=True
        )
        keep: list[int] = []
        used = np.zeros(self.inc_t.shape[0], dtype=bool)
        for _, b in picked:
            mem = list(self.members[b])
            if not used[mem].any():
                used[mem] = True
                keep.append(b)
        if not keep:
            return False
        pool = np.array(keep, dtype=np.int64)
        rows, cs = self._assign(pool)
        if float(self.ben[rows, pool[cs]].sum()) <= self.value() + 1e-6:
            return False
        for r in range(len(self.choice)):
            self.set(r, -1)
        for r, c in zip(rows, cs, strict=True):
            self.set(int(r), int(pool[c]))
        return True

    def _assign(self, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best rider for each pool bundle (at most one each); pairs with a positive benefit only."""
        gain = self.gain[:, pool]
        rows, cs = linear_sum_assignment(gain, maximize=True)
        ok = gain[rows, cs] > _EPS
        return rows[ok], cs[ok]

    def rematch(self) -> bool:
        """Give the chosen bundles to riders optimally (a linear assignment); True when it changed."""
        chosen = self.choice[self.choice >= 0]
        if len(chosen) == 0:
            return False
        sub = self.ben[:, chosen]
        small = -1e9
        rows, cs = linear_sum_assignment(np.where(np.isfinite(sub), sub, small), maximize=True)
        if (sub[rows, cs] <= small).any():
            return False
        if float(sub[rows, cs].sum()) <= self.value() + 1e-6:
            return False
        for r in range(len(self.choice)):
            self.set(r, -1)
        for r, c in zip(rows, cs, strict=True):
            self.set(int(r), int(chosen[c]))
        return True


def _improve(s: _Search) -> None:
    for _ in range(4):
        s.relocate()
        s.split()
        s.extend()
        s.rematch()
        if not s.eject():
            break


def _solve_round(cols: Columns) -> np.ndarray:
    """Start from the linear-assignment relaxation repaired (each rider its best distinct bundle,
    overlapping bundles dropped greedily), then improve until no move gains. On the storm preset and
    the synthetic tests this start beat the greedy-by-benefit start everywhere (0-0.2% vs 0-17.5%)."""
    s = _Search(cols)
    s.extend()
    _improve(s)
    return s.choice


def _round_objective(cols: Columns, choice: np.ndarray, penalties: np.ndarray) -> float:
    covered = np.zeros(len(penalties), dtype=bool)
    total = 0.0
    for r, b in enumerate(choice):
        if b >= 0:
            total += float(cols.cost[r, b])
            covered[cols.members[b, : cols.size[b]]] = True
    return total + float(penalties[~covered].sum())


def _reasons(
    remaining: list[int], first_cols: Columns | None, riders: Sequence[RiderState]
) -> list[tuple[UnassignedReason, str]]:
    """Why each order left over got no rider, judged on the first round's columns."""
    if not remaining:  # nothing left over (or nothing to plan: no round was run, no columns exist)
        return []
    if not riders:
        return [("no_candidate_riders", "no rider was given or matched the filters")] * len(remaining)
    if all(r.capacity - r.load < 1 for r in riders):
        why = f"all {len(riders)} candidate riders already carry their capacity"
        return [("riders_full", why)] * len(remaining)
    assert first_cols is not None
    idx = np.asarray(remaining, dtype=np.int64)  # singles come first: bundle i is order i alone
    single_cost = first_cols.cost[:, idx]
    n_feasible = np.isfinite(single_cost).sum(axis=0)
    worth = ((first_cols.penalty[idx][None, :] - single_cost) > _EPS).any(axis=0)
    out: list[tuple[UnassignedReason, str]] = []
    for k in range(len(idx)):
        if n_feasible[k] == 0:
            out.append(("no_rider_in_time", "no rider with room can reach the store before its shift ends"))
        elif not worth[k]:
            out.append(("not_worth_assigning", "every feasible trip costs more than the unassigned penalty"))
        else:
            why = f"{int(n_feasible[k])} riders could take it, but their capacity went to other orders"
            out.append(("capacity_exhausted", why))
    return out


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
            seq, offs, to_free = cols.trip(r, b)
            pick = float(cols.pickup[r, b])
            drops = pick + offs
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
            end = pick + to_free
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
    for i, (reason, detail) in zip(remaining, _reasons(remaining, first_cols, riders), strict=True):
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


def warm_up() -> None:
    """Solve a small problem once: the compiled moves (tools.riders.moves) are compiled on their first
    call, or loaded from numba's cache (``__pycache__``), about 5 s or 0.5 s, paid here instead."""
    from tools.riders.synthetic import storm_like

    orders, riders, params = storm_like(seed=0, n_orders=12, n_riders=4, n_stores=1)
    solve_assignment(orders, riders, params)

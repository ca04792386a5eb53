"""The local search's moves that go rider by rider, compiled: relocate, split, eject, and the
bookkeeping of a rider's column.

``tools.riders.solver._Search`` keeps the state as numpy arrays and runs the moves built on linear
assignments (extend, rematch) in Python; the moves that look at one rider's columns at a time run
here, compiled by numba (a dependency of shap, so no new package). In numpy each of their steps was
a call on a small array, and the calls cost more than the work: the storm's search spent ~9 ms in
them. Compiled, each step is a loop over the bundles; the arithmetic is
the same, in the same order (no fastmath), so the moves make the same choices as the numpy code did.

Every move takes the search's state as one tuple, ``state`` = (choice, owner_ext, cnt, version, held,
have, inc_ext, mem_pad, scratch), which the moves change in place. Its parts (B bundles, N orders):

- ``held`` is the (B+1, B) overlap matrix, row b filled on first use (``have[b]``): how many orders
  each bundle shares with bundle b; row B stays zero and stands for "no bundle" (b = -1). A problem
  too big for the matrix passes a (0, B) array instead, and rows are computed into ``scratch``.
- ``mem_pad`` (B, 3) holds each bundle's orders, padded with N; ``inc_ext`` (N+1, B) is the
  incidence of orders in bundles with a zero row N; ``owner_ext`` (N+1,) the rider holding each order
  (-1: none), with a slot N that stays -1.
- ``version`` is a one-element counter bumped by every change of a rider's column; a move that
  found nothing for rider r stores it in ``idle[r]`` and skips r until something changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

GAIN_EPS = 1e-6  # what a move must gain to be applied


@njit(cache=True, nogil=True)
def held_row(b: int, state: Any, slot: int) -> Any:
    """(B,) how many orders each bundle shares with bundle ``b`` (zeros for b = -1)."""
    held, have, inc_ext, mem_pad, scratch = state[4], state[5], state[6], state[7], state[8]
    n_bundles = inc_ext.shape[1]
    if held.shape[0] > 0:
        if b < 0:
            return held[n_bundles]
        if not have[b]:
            m0, m1, m2 = mem_pad[b, 0], mem_pad[b, 1], mem_pad[b, 2]
            for c in range(n_bundles):
                held[b, c] = inc_ext[m0, c] + inc_ext[m1, c] + inc_ext[m2, c]
            have[b] = True
        return held[b]
    out = scratch[slot]
    if b < 0:
        out[:] = 0
        return out
    m0, m1, m2 = mem_pad[b, 0], mem_pad[b, 1], mem_pad[b, 2]
    for c in range(n_bundles):
        out[c] = inc_ext[m0, c] + inc_ext[m1, c] + inc_ext[m2, c]
    return out


@njit(cache=True, nogil=True)
def set_choice(r: int, b: int, state: Any) -> None:
    """Rider ``r`` takes bundle ``b`` (-1: none): the owners of its orders and the held counts follow."""
    choice, owner_ext, cnt, version, inc_ext, mem_pad = state[0], state[1], state[2], state[3], state[6], state[7]
    n_orders = inc_ext.shape[0] - 1
    version[0] += 1
    cur = choice[r]
    if cur >= 0:
        for j in range(3):
            m = mem_pad[cur, j]
            if m < n_orders:
                owner_ext[m] = -1
        row = held_row(cur, state, 0)
        for c in range(cnt.shape[0]):
            cnt[c] -= row[c]
    choice[r] = b
    if b >= 0:
        for j in range(3):
            m = mem_pad[b, j]
            if m < n_orders:
                owner_ext[m] = r
        row = held_row(b, state, 0)
        for c in range(cnt.shape[0]):
            cnt[c] += row[c]


@njit(cache=True, nogil=True)
def _best_free(q_row: Any, cnt: Any, own: Any, plus: Any, minus: Any) -> tuple[int, float]:
    """argmax (first on ties, as np.argmax) of ``q_row`` over the bundles none of whose orders is held
    by the counts ``cnt`` without ``own``, with ``plus`` added and ``minus`` taken; -inf where one is."""
    best_c, best_v = 0, -np.inf
    for c in range(q_row.shape[0]):
        v = q_row[c] if cnt[c] - own[c] + plus[c] - minus[c] <= 0 else -np.inf
        if c == 0 or v > best_v:
            best_c, best_v = c, v
    return best_c, best_v


@njit(cache=True, nogil=True)
def relocate(max_passes: int, ben: Any, best: Any, idle: Any, state: Any) -> bool:
    """Each rider moves to its best column free of other riders' orders; passes until none moves."""
    choice, cnt, version = state[0], state[2], state[3]
    zero = np.zeros(cnt.shape[0], dtype=cnt.dtype)
    moved_any = False
    for _ in range(max_passes):
        moved = False
        for r in range(ben.shape[0]):
            if idle[r] == version[0]:
                continue  # nothing changed since r last found no better column
            cur = choice[r]
            cur_val = ben[r, cur] if cur >= 0 else 0.0
            bar = max(cur_val, 0.0) + GAIN_EPS
            if best[r] <= bar:
                continue  # no column of r beats what r has
            own = held_row(cur, state, 1)
            c, v = _best_free(ben[r], cnt, own, zero, zero)
            if v > bar:
                set_choice(r, c, state)
                moved = moved_any = True
            else:
                idle[r] = version[0]
        if not moved:
            break
    return moved_any


@njit(cache=True, nogil=True)
def split(ben: Any, size: Any, parts: Any, state: Any) -> bool:
    """A rider hands part of its bundle to an idle rider when the two trips gain together. ``parts``
    (B, 6, 2): the ways to cut bundle b in two (the part r keeps, the rest), both bundles existing,
    padded with -1; filled by the caller for every bundle this call can meet (``_Search.split``)."""
    choice = state[0]
    improved = False
    n_riders = ben.shape[0]
    for r in range(n_riders):
        b = choice[r]
        if b < 0 or size[b] < 2:
            continue
        n_idle = 0
        for q in range(n_riders):
            if choice[q] < 0:
                n_idle += 1
        if n_idle == 0:
            return improved
        best_gain, best_keep, best_q, best_rest = GAIN_EPS, -1, -1, -1
        for k in range(parts.shape[1]):
            keep, rest = parts[b, k, 0], parts[b, k, 1]
            if keep < 0:
                break
            # the first idle rider with the most for the rest (np.argmax over the idle riders)
            q_best, q_val = -1, -np.inf
            for q in range(n_riders):
                if choice[q] < 0 and (q_best < 0 or ben[q, rest] > q_val):
                    q_best, q_val = q, ben[q, rest]
            gain = ben[r, keep] + q_val - ben[r, b]
            if gain > best_gain:
                best_gain, best_keep, best_q, best_rest = gain, keep, q_best, rest
        if best_keep >= 0:
            set_choice(r, best_keep, state)
            set_choice(best_q, best_rest, state)
            improved = True
    return improved


@njit(cache=True, nogil=True)
def _candidates(r: int, cur_val: float, ben: Any, top: int, cand_buf: Any, cand_len: Any) -> None:
    """r's columns better than ``cur_val``, best first (ties in column order), the first 3 x ``top``."""
    row = ben[r]
    idx = np.nonzero(row > cur_val + GAIN_EPS)[0]
    order = np.argsort(-row[idx], kind="mergesort")
    n = min(len(idx), 3 * top)
    for i in range(n):
        cand_buf[r, i] = idx[order[i]]
    cand_len[r] = n


@njit(cache=True, nogil=True)
def eject(top: int, ben: Any, idle: Any, cand_buf: Any, cand_len: Any, cand_cur: Any, state: Any) -> bool:
    """Rider r takes a column that clashes with exactly one other rider q, and q moves to its best
    column free of every other rider's orders and of r's new one; applied when the pair gains. Of r's
    columns better than its own (``_candidates``, kept while r keeps its column), the first ``top``
    that clash with one rider only are costed in order and the first that gains is applied."""
    choice, owner_ext, cnt, version, mem_pad = state[0], state[1], state[2], state[3], state[7]
    improved = False
    for r in range(ben.shape[0]):
        if idle[r] == version[0]:
            continue  # nothing changed since r last found no gaining ejection
        idle[r] = version[0]
        cur = choice[r]
        cur_val = ben[r, cur] if cur >= 0 else 0.0
        if cand_cur[r] != cur:  # r's candidates depend on r and its column only
            _candidates(r, cur_val, ben, top, cand_buf, cand_len)
            cand_cur[r] = cur
        # the counts without r's own column: what q must avoid besides r's new column
        own = held_row(cur, state, 1)
        picked = 0
        for i in range(cand_len[r]):
            if picked == top:
                break
            b = cand_buf[r, i]
            q = -1
            clean = True
            for j in range(3):
                o = owner_ext[mem_pad[b, j]]
                if o < 0 or o == r:
                    continue
                if q < 0:
                    q = o
                elif o != q:
                    clean = False
            if q < 0 or not clean:
                continue  # nobody to eject, or more than one rider
            picked += 1
            q_cur = choice[q]  # q holds an order, so it has a column
            theirs = held_row(q_cur, state, 2)
            mine = held_row(b, state, 0)
            # q avoids the orders of every rider but r and q, and those of r's new column
            best_c, best_v = _best_free(ben[q], cnt, own, mine, theirs)
            gain = ben[r, b] - cur_val + max(best_v, 0.0) - ben[q, q_cur]
            if gain > GAIN_EPS:
                q_new = best_c if best_v > 0 else -1
                set_choice(q, -1, state)
                set_choice(r, b, state)
                set_choice(q, q_new, state)
                improved = True
                break
    return improved

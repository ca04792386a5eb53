"""The assignment problem's plain data: orders needing a rider, candidate riders, knobs, and the answer.

Times are minutes on one axis (the world's minute 0 or the MDRP day's start); coordinates are metres.
Pure data with no database, so the solver runs the same inside a tool, the simulator and the bench.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class OrderJob:
    id: str
    store_id: str
    store_x: float
    store_y: float
    x: float  # drop-off
    y: float
    ready: float  # earliest pickup minute
    promise: float  # promised drop-off minute
    priority: int = 0


@dataclass(frozen=True, slots=True)
class RiderState:
    id: str
    x: float  # where the rider is, or will be when its current route ends
    y: float
    free_at: float  # minute its current route ends (<= now when idle)
    shift_end: float  # no pickup after this minute
    capacity: int = 3
    load: int = 0  # orders it already carries or is committed to
    shift_start: float = -math.inf


@dataclass(frozen=True, slots=True)
class SolverParams:
    now: float
    meters_per_minute: float = 320.0
    speed_factor: float = 1.0  # < 1 slows travel (rain)
    pickup_service: float = 4.0
    dropoff_service: float = 4.0
    max_bundle: int = 3
    bundle_ready_window: float = 10.0
    bundle_detour: float = 10.0
    partners_per_order: int = 3
    unassigned_penalty: float = 1000.0
    late_order_weight: float = 0.0
    travel_weight: float = 0.01
    priority_weight: float = 100.0  # extra unassigned penalty per priority point (expedited orders)


UnassignedReason = Literal[
    "no_candidate_riders",  # the candidate rider set is empty
    "riders_full",  # every candidate rider already carries its capacity
    "no_rider_in_time",  # no rider with room can reach the store before its shift ends
    "capacity_exhausted",  # riders could serve it, but their capacity went to other orders
    "not_worth_assigning",  # every feasible trip would cost more than leaving it for later
]


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    order_id: str
    rider_id: str
    bundle: tuple[str, ...]  # orders of the same trip, in drop-off sequence
    round: int  # 1 = the rider's next trip, 2 = the trip after, ...
    pickup: float
    dropoff: float
    promise: float
    lateness: float

    @property
    def on_time(self) -> bool:
        return self.lateness <= 0


@dataclass(frozen=True, slots=True)
class PlannedTrip:
    rider_id: str
    order_ids: tuple[str, ...]  # drop-off sequence
    round: int
    start: float  # when the rider sets off for the store
    pickup: float
    dropoffs: tuple[float, ...]
    end: float  # when the rider is free again
    end_x: float
    end_y: float
    cost: float


@dataclass(frozen=True, slots=True)
class Unassigned:
    order_id: str
    reason: UnassignedReason
    detail: str


@dataclass(frozen=True, slots=True)
class ExactCheck:
    """The same model solved by MILP (HiGHS) on the same columns, round by round."""

    optimum: float  # best objective found by the MILP (sum over rounds)
    lower_bound: float  # proven lower bound on the model's optimum (= optimum when proven optimal)
    gap_pct: float  # (heuristic - lower_bound) / service part of the bound, in percent
    proven_optimal: bool
    solve_ms: float


@dataclass
class Solution:
    planned: dict[str, PlannedOrder]
    trips: list[PlannedTrip]
    unassigned: list[Unassigned]
    objective: float  # cost of all trips + penalties of unassigned orders
    lateness_minutes: float
    penalty: float  # the unassigned part of the objective
    solve_ms: float
    rounds: int
    columns: int
    exact: ExactCheck | None = None
    round_objectives: list[float] = field(default_factory=list)

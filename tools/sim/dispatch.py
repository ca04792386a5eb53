"""The contract between the simulator and a dispatcher.

At each decision epoch the simulator hands the dispatcher a ``DispatchView`` (orders waiting for a
courier, couriers with where and when they next become free) and receives ``Assignment`` bundles:
one courier, orders from one store, in drop-off sequence. The simulator executes them by the MDRP
rules (travel = ceil(distance / speed), pickup no earlier than the latest ready time, service times).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PendingOrder:
    id: str
    store_id: str
    store_x: float
    store_y: float
    x: float  # drop-off
    y: float
    placed: float  # minutes from start of day
    ready: float
    promised: float  # placement + target minutes
    priority: int = 0


@dataclass(frozen=True, slots=True)
class CourierState:
    id: str
    x: float  # where the courier is, or will be when free
    y: float
    free_at: float  # minute the courier can start a new assignment
    on_time: float
    off_time: float
    capacity: int = 3
    load: int = 0  # orders currently carried


@dataclass(frozen=True, slots=True)
class Assignment:
    courier_id: str
    order_ids: tuple[str, ...]  # same store, in drop-off sequence
    predicted_pickup: float | None = None
    predicted_dropoffs: tuple[float, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class DispatchView:
    now: float
    orders: tuple[PendingOrder, ...]
    couriers: tuple[CourierState, ...]
    meters_per_minute: float
    pickup_service: float
    dropoff_service: float
    speed_factor: float = 1.0
    target_minutes: float = 40.0


class Dispatcher(Protocol):
    name: str
    interval_minutes: float  # how often the simulator calls decide()

    def decide(self, view: DispatchView) -> list[Assignment]:
        """Return assignments to start now; orders left out wait for a later epoch."""
        ...

"""Writing a simulated run in the MDRP solution format (see the data README), for independent checking."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.sim.engine import Simulation

ASSIGNMENTS_FILE = "solution_info_assignments.txt"
ORDERS_FILE = "solution_info_orders.txt"
COURIERS_FILE = "solution_info_couriers.txt"
ORDERS_HEADER = "order placement_time ready_time pickup_time dropoff_time courier"


def fmt(t: float | None) -> str:
    if t is None:
        return "-"
    return str(int(t)) if float(t).is_integer() else f"{t:g}"


def write_solution(sim: Simulation, directory: Path) -> Path:
    """Write the three files into ``directory`` (created); only executed pickups and moves appear."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["assignment_time pickup_time courier orders"]
    for a in sim.assignments:
        if a.picked:
            lines.append(" ".join([fmt(a.time), fmt(a.pickup), a.courier, *a.order_ids]))
    (directory / ASSIGNMENTS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")

    lines = [ORDERS_HEADER]
    for o in sim.orders:
        if o.dropoff is not None and o.courier >= 0:
            lines.append(
                " ".join([o.id, fmt(o.placed), fmt(o.ready), fmt(o.pickup), fmt(o.dropoff), sim.couriers[o.courier].id])
            )
    (directory / ORDERS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")

    lines = ["courier departure_time origin destination"]
    for c in sim.couriers:
        for dep, origin, dest in c.moves:
            lines.append(f"{c.id} {fmt(dep)} {origin} {dest}")
    (directory / COURIERS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory

"""The solver dispatcher against the baseline on real MDRP days, and its run through the checker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.sim.baseline import BaselineDispatcher
from tools.sim.checker import check_solution
from tools.sim.dispatch import CourierState, DispatchView, PendingOrder
from tools.sim.engine import Simulation
from tools.sim.solver_dispatch import SolverDispatcher
from tools.world.mdrp import read_instance


def test_decide_bundles_same_store_orders_when_couriers_are_short() -> None:
    orders = tuple(PendingOrder(f"o{i}", "s", 0, 0, 1000 + 50 * i, 0, placed=0, ready=5, promised=40) for i in range(3))
    couriers = (CourierState("c1", 100, 0, free_at=0, on_time=0, off_time=300),)
    view = DispatchView(
        now=1, orders=orders, couriers=couriers, meters_per_minute=320, pickup_service=4, dropoff_service=4
    )
    out = SolverDispatcher().decide(view)
    assert len(out) == 1 and sorted(out[0].order_ids) == ["o0", "o1", "o2"]
    assert out[0].predicted_pickup == 5


@pytest.mark.slow
@pytest.mark.parametrize("day", ["0o100t100s1p100", "1o100t75s2p125"])
def test_solver_beats_baseline_and_passes_the_checker(mdrp_dir: Path, tmp_path: Path, day: str) -> None:
    inst = read_instance(mdrp_dir / day)
    base = Simulation.from_instance(inst, BaselineDispatcher()).run().metrics()
    sim = Simulation.from_instance(inst, SolverDispatcher()).run()
    solv = sim.metrics()
    assert solv["share_within_target"] > base["share_within_target"], (solv, base)
    assert solv["orders_delivered"] >= base["orders_delivered"]
    sim.write_solution(tmp_path / "sol")
    assert check_solution(instance_dir=mdrp_dir / day, solution_dir=tmp_path / "sol") == []

"""The solver dispatcher against the baseline on real MDRP days, and its run through the checker."""

from __future__ import annotations

import math
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


def test_an_order_ready_later_waits_for_a_courier_coming_on_shift_rather_than_a_late_bundle() -> None:
    # c1 is free now; c2 comes on shift in 5 minutes. Both orders are ready in 30 minutes: as a pair
    # on c1 the second drop-off is late, as two singles (c1 + c2) both are on time.
    orders = (
        PendingOrder("a", "s", 0, 0, 1000, 0, placed=0, ready=30, promised=40),
        PendingOrder("b", "s", 0, 0, -1000, 0, placed=0, ready=30, promised=40),
    )
    couriers = (
        CourierState("c1", 0, 0, free_at=0, on_time=0, off_time=300),
        CourierState("c2", 0, 0, free_at=5, on_time=5, off_time=300),
    )
    view = DispatchView(
        now=0, orders=orders, couriers=couriers, meters_per_minute=200, pickup_service=4, dropoff_service=4
    )
    out = SolverDispatcher().decide(view)
    assert [len(a.order_ids) for a in out] == [1] and out[0].courier_id == "c1"
    # the previous behaviour: only couriers free now, late bundles committed at once
    myopic = SolverDispatcher(plan_horizon=0, late_bundle_window=math.inf).decide(view)
    assert [sorted(a.order_ids) for a in myopic] == [["a", "b"]]


def test_a_bundle_that_makes_an_order_late_is_held_until_its_courier_must_leave() -> None:
    # alone, each order is on time (pickup 30, drop 39 <= 40); together the second drops at 53
    orders = (
        PendingOrder("a", "s", 0, 0, 1000, 0, placed=0, ready=30, promised=40),
        PendingOrder("b", "s", 0, 0, -1000, 0, placed=0, ready=30, promised=40),
    )

    def view(now: float) -> DispatchView:
        couriers = (CourierState("c1", 0, 0, free_at=now, on_time=0, off_time=300),)
        return DispatchView(
            now=now, orders=orders, couriers=couriers, meters_per_minute=200, pickup_service=4, dropoff_service=4
        )

    assert SolverDispatcher().decide(view(0)) == []  # 28 minutes to spare: more couriers may come
    late = SolverDispatcher().decide(view(27))  # must leave by 28 to pick up at 30
    assert [sorted(a.order_ids) for a in late] == [["a", "b"]]


@pytest.mark.slow
@pytest.mark.parametrize("day", ["0o100t100s1p100", "1o100t75s2p125", "0o100t75s1p125"])
def test_solver_beats_baseline_and_passes_the_checker(mdrp_dir: Path, tmp_path: Path, day: str) -> None:
    inst = read_instance(mdrp_dir / day)
    base = Simulation.from_instance(inst, BaselineDispatcher()).run().metrics()
    sim = Simulation.from_instance(inst, SolverDispatcher()).run()
    solv = sim.metrics()
    assert solv["share_within_target"] > base["share_within_target"], (solv, base)
    assert solv["orders_delivered"] >= base["orders_delivered"]
    sim.write_solution(tmp_path / "sol")
    assert check_solution(instance_dir=mdrp_dir / day, solution_dir=tmp_path / "sol") == []

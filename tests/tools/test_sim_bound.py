"""The on-time bound: per order, the earliest click-to-door that the MDRP rules allow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tools.sim.baseline import BaselineDispatcher
from tools.sim.bound import earliest_click_to_door, on_time_bound
from tools.sim.engine import Simulation
from tools.sim.solver_dispatch import SolverDispatcher
from tools.world.mdrp import MdrpCourier, MdrpInstance, MdrpOrder, MdrpParams, MdrpRestaurant, read_instance

PARAMS = MdrpParams(
    meters_per_minute=100.0,
    pickup_service=4.0,
    dropoff_service=4.0,
    target=40.0,
    maximum=90.0,
    pay_per_order=10.0,
    pay_per_hour=15.0,
)


def day(orders: list[MdrpOrder], couriers: list[MdrpCourier]) -> MdrpInstance:
    return MdrpInstance(
        name="t",
        path=Path("."),
        orders=tuple(orders),
        couriers=tuple(couriers),
        restaurants=(MdrpRestaurant("r", 0.0, 0.0),),
        params=PARAMS,
    )


def order(oid: str, ready: float) -> MdrpOrder:
    # the customer is 10 minutes from the restaurant: with a courier waiting there, the drop-off is
    # ready + 2 (pickup service after) + 10 + 2 (drop-off service before)
    return MdrpOrder(oid, 1000.0, 0.0, placement=0.0, restaurant="r", ready=ready)


def test_a_courier_waiting_at_the_restaurant_gives_ready_plus_service_and_travel() -> None:
    inst = day([order("a", 20), order("b", 26), order("c", 30)], [MdrpCourier("c1", 0, 0, 0, 300)])
    assert earliest_click_to_door(inst) == {"a": (34, 34), "b": (40, 40), "c": (44, 44)}
    b = on_time_bound(inst)
    # exactly on the target counts as within it
    assert (b.orders, b.on_time, b.ready_too_late, b.no_courier_in_time) == (3, 2, 1, 0)
    assert b.share == round(2 / 3, 4)


def test_no_courier_can_pick_up_at_a_shift_change() -> None:
    # c1 waits at the restaurant but its shift ends before the food is ready; c2 comes on shift as
    # the food is ready, 4 minutes away: pickup at 25 + 4 + 2 = 31, drop-off 31 + 2 + 10 + 2 = 45
    couriers = [MdrpCourier("c1", 0, 0, 0, 24), MdrpCourier("c2", 400, 0, 25, 300)]
    inst = day([order("a", 25)], couriers)
    assert earliest_click_to_door(inst) == {"a": (39, 45)}
    b = on_time_bound(inst)
    assert (b.on_time, b.ready_too_late, b.no_courier_in_time) == (0, 0, 1)
    # a pickup exactly at the off_time is allowed
    inst = day([order("a", 25)], [MdrpCourier("c1", 0, 0, 0, 25), couriers[1]])
    assert earliest_click_to_door(inst) == {"a": (39, 39)}


def test_a_courier_cannot_reach_the_restaurant_before_its_shift_starts() -> None:
    # on at 10, 15 minutes away: at the restaurant at 25, picks up at 27 although the food is ready at 5
    inst = day([order("a", 5)], [MdrpCourier("c1", 1500, 0, 10, 300)])
    assert earliest_click_to_door(inst) == {"a": (19, 41)}


def test_an_order_nobody_can_pick_up_is_never_on_time() -> None:
    inst = day([order("a", 5)], [MdrpCourier("c1", 0, 0, 0, 4)])
    assert earliest_click_to_door(inst)["a"][1] == math.inf
    assert on_time_bound(inst).on_time == 0


@pytest.mark.parametrize("name", ["0r50t100s1p100", "2o50t75s1p100", "3o100t75s1p100"])
def test_no_baseline_delivery_beats_its_order_bound(mdrp_dir: Path, name: str) -> None:
    inst = read_instance(mdrp_dir / name)
    sim = Simulation.from_instance(inst, BaselineDispatcher()).run()
    earliest = earliest_click_to_door(inst)
    delivered = [o for o in sim.orders if o.dropoff is not None]
    assert delivered
    for o in delivered:
        assert o.dropoff - o.placed >= earliest[o.id][1], o.id  # type: ignore[operator]
    assert sim.metrics()["orders_within_target"] <= on_time_bound(inst).on_time


@pytest.mark.slow
def test_no_solver_delivery_beats_its_order_bound(mdrp_dir: Path) -> None:
    inst = read_instance(mdrp_dir / "0o50t75s1p100")
    sim = Simulation.from_instance(inst, SolverDispatcher()).run()
    earliest = earliest_click_to_door(inst)
    for o in sim.orders:
        if o.dropoff is not None:
            assert o.dropoff - o.placed >= earliest[o.id][1], o.id
    assert sim.metrics()["orders_within_target"] <= on_time_bound(inst).on_time

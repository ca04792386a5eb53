"""The simulator: MDRP rules, the state machine, determinism, metrics, and the dispatch contract."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tools.sim.baseline import BaselineDispatcher
from tools.sim.dispatch import Assignment, DispatchView
from tools.sim.engine import Simulation
from tools.state_machine import OrderStatus
from tools.world.mdrp import read_instance

SMALL = "0r50t100s1p100"
METRIC_KEYS = {
    "orders_placed",
    "orders_delivered",
    "click_to_door_mean",
    "click_to_door_p90",
    "share_within_target",
    "share_within_max",
    "courier_utilisation",
    "ready_to_pickup_wait_mean",
    "courier_compensation",
}


@pytest.fixture(scope="module")
def small_run() -> Simulation:
    from tests.conftest import MDRP_DIR

    return Simulation.from_instance(read_instance(MDRP_DIR / SMALL), BaselineDispatcher(), seed=0).run()


def test_a_day_runs_by_the_mdrp_rules(small_run: Simulation) -> None:
    sim = small_run
    half_p, half_d = sim.pickup_service / 2, sim.dropoff_service / 2
    stores = {s.id: s for s in sim.stores}
    delivered = [o for o in sim.orders if o.dropoff is not None]
    assert len(delivered) >= 0.9 * len(sim.orders)
    for o in delivered:
        assert o.status == OrderStatus.delivered
        assert o.pickup is not None and o.pickup >= o.ready  # never before the food is ready
        assert o.dropoff is not None
        st = sim.stores[o.store]
        trip = math.ceil(math.hypot(st.x - o.x, st.y - o.y) / sim.mpm - 1e-9)
        assert o.dropoff >= o.pickup + half_p + trip + half_d  # single orders: the direct trip at least
        # the state machine was followed, in time order
        statuses = [h[0] for h in o.history]
        assert statuses[0] == OrderStatus.confirmed and statuses[-1] == OrderStatus.delivered
        assert [h[1] for h in o.history] == sorted(h[1] for h in o.history)
    for a in sim.assignments:
        c = sim.couriers[sim.courier_index[a.courier]]
        assert a.pickup <= c.off_time  # no pickup after the shift
        assert a.time >= max(sim.orders[sim.order_index[i]].placed for i in a.order_ids)
    assert stores  # the instance's restaurants are the pickup points


def test_metrics_keys_and_ranges(small_run: Simulation) -> None:
    m = small_run.metrics()
    assert METRIC_KEYS <= set(m)
    assert m["orders_placed"] == len(small_run.orders)
    assert 0 <= m["share_within_target"] <= m["share_within_max"] <= 1
    assert 0 < m["courier_utilisation"] <= 1
    assert m["click_to_door_p90"] >= m["click_to_door_mean"] > 0
    # compensation: at least the guaranteed hourly pay of every courier
    hours = sum(c.off_time - c.on_time for c in small_run.couriers) / 60
    assert m["courier_compensation"] >= round(1500 * hours) - len(small_run.couriers)


def test_same_seed_same_metrics(mdrp_dir: Path) -> None:
    inst = read_instance(mdrp_dir / SMALL)
    a = Simulation.from_instance(inst, BaselineDispatcher(), seed=4).run().metrics()
    b = Simulation.from_instance(inst, BaselineDispatcher(), seed=4).run().metrics()
    assert a == b


class Recorder:
    """A dispatcher that records views and sends a few deliberately bad assignments."""

    name = "recorder"
    interval_minutes = 5.0

    def __init__(self) -> None:
        self.views: list[DispatchView] = []

    def decide(self, view: DispatchView) -> list[Assignment]:
        self.views.append(view)
        out = []
        if view.orders:
            o = view.orders[0]
            out.append(Assignment(courier_id="nobody", order_ids=(o.id,)))
            out.append(Assignment(courier_id=view.couriers[0].id, order_ids=(o.id, o.id)))
        return out + BaselineDispatcher().decide(view)


def test_the_dispatch_contract_is_honoured(mdrp_dir: Path) -> None:
    disp = Recorder()
    sim = Simulation.from_instance(read_instance(mdrp_dir / SMALL), disp, seed=0).run()
    assert disp.views, "the dispatcher was called"
    nows = [v.now for v in disp.views]
    assert all(b - a >= 5 - 1e-9 for a, b in zip(nows, nows[1:], strict=False))
    for v in disp.views[:50]:
        assert all(o.placed <= v.now for o in v.orders)  # no clairvoyance
        assert all(c.off_time > v.now for c in v.couriers)
        assert v.meters_per_minute == sim.mpm and v.target_minutes == 40
    reasons = {why.split(" ")[0] for _t, _a, why in sim.rejected}
    assert "unknown" in reasons and "empty" in reasons  # bad assignments are refused, not executed
    assert sum(1 for o in sim.orders if o.dropoff is not None) > 0.8 * len(sim.orders)


def test_bundles_are_executed_in_sequence(mdrp_dir: Path) -> None:
    class Bundler:
        name = "bundler"
        interval_minutes = 1.0

        def decide(self, view: DispatchView) -> list[Assignment]:
            by_store: dict[str, list[str]] = {}
            for o in view.orders:
                by_store.setdefault(o.store_id, []).append(o.id)
            free = [c for c in view.couriers if c.on_time <= view.now and c.free_at <= view.now]
            out = []
            for (_s, ids), c in zip(sorted(by_store.items()), free, strict=False):
                out.append(Assignment(courier_id=c.id, order_ids=tuple(ids[:2])))
            return out

    sim = Simulation.from_instance(read_instance(mdrp_dir / SMALL), Bundler(), seed=0).run()
    pairs = [a for a in sim.assignments if len(a.order_ids) == 2 and a.picked]
    assert pairs
    for a in pairs:
        first, second = (sim.orders[sim.order_index[i]] for i in a.order_ids)
        if second.dropoff is not None and first.dropoff is not None:
            assert second.dropoff >= first.dropoff + sim.dropoff_service
            assert first.pickup == second.pickup

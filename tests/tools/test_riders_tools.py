"""The riders tools on a small world, on both database backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from tools.base import ToolContext
from tools.models import Customer, Order, OrderEvent, Rider, RiderStatus, Store, Weather, WorldInfo
from tools.registry import get_tool
from tools.state_machine import OrderStatus

EPOCH = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
NOW = EPOCH + timedelta(minutes=60)


def at(minute: float) -> datetime:
    return EPOCH + timedelta(minutes=minute)


def build_world(session: Session) -> None:
    session.add(WorldInfo(name="t", source="test", epoch=EPOCH, now=NOW, meters_per_minute=320))
    session.add(Store(id="s1", name="S1", x=0, y=0, zone="z1"))
    session.add(Store(id="s2", name="S2", x=5000, y=0, zone="z1"))
    session.add(Customer(id="c1", name="C"))
    session.flush()
    riders = [
        # id, x, y, status, capacity, shift_end minute
        ("r1", 300, 0, RiderStatus.idle, 3, 300),
        ("r2", 4800, 0, RiderStatus.idle, 2, 300),
        ("r3", 100, 100, RiderStatus.offline, 3, 300),
        ("r4", 200, 0, RiderStatus.idle, 3, 59),  # shift already over
        ("r5", 9000, 0, RiderStatus.busy, 1, 300),
    ]
    for rid, x, y, st, cap, end in riders:
        session.add(
            Rider(id=rid, name=rid, x=x, y=y, status=st, capacity=cap, zone="z1", shift_start=at(0), shift_end=at(end))
        )
    session.flush()
    orders = [
        # id, store, x, y, status, ready, rider
        ("o1", "s1", 1000, 500, OrderStatus.ready, 58, None),
        ("o2", "s1", 1200, 600, OrderStatus.ready, 60, None),
        ("o3", "s1", 900, 300, OrderStatus.picking, 63, None),
        ("o4", "s2", 6000, 800, OrderStatus.confirmed, 65, None),
        ("o5", "s2", 6200, 500, OrderStatus.assigned, 62, "r5"),
        ("o6", "s1", 0, 900, OrderStatus.delivered, 20, None),
    ]
    for oid, sid, x, y, st, ready, rid in orders:
        session.add(
            Order(
                id=oid,
                customer_id="c1",
                store_id=sid,
                x=x,
                y=y,
                zone="z1",
                status=st,
                placed_at=at(ready - 15),
                ready_at=at(ready),
                promised_at=at(ready + 25),
                rider_id=rid,
                value_cents=2500,
            )
        )
    session.commit()


@pytest.fixture
def world(engine: Engine) -> Engine:
    with Session(engine, expire_on_commit=False) as s:
        build_world(s)
    return engine


def call(engine: Engine, name: str, args: dict, commit: bool = True) -> dict:
    tool = get_tool(name)
    assert tool is not None
    with Session(engine, expire_on_commit=False) as s:
        out = tool.invoke(ToolContext(session=s, now=NOW, actor="test", incident_id="inc-1"), args)
        if commit:
            s.commit()
    return out


def counts(engine: Engine) -> tuple[int, int, list[tuple[str, str, str | None]]]:
    with Session(engine) as s:
        n_ev = s.exec(select(func.count()).select_from(OrderEvent)).one()
        n_ord = s.exec(select(func.count()).select_from(Order)).one()
        state = [(o.id, o.status, o.rider_id) for o in s.exec(select(Order).order_by(Order.id))]
    return n_ev, n_ord, state


def test_find_available_riders_near_a_point(world: Engine) -> None:
    out = call(world, "find_available_riders", {"x": 0, "y": 0, "radius_m": 6000})
    assert out["ok"] is True
    ids = [r["rider_id"] for r in out["riders"]]
    assert ids[0] == "r1"  # nearest first
    assert "r3" not in ids and "r4" not in ids  # offline, shift over
    assert "r5" not in ids  # 9 km away
    r1 = out["riders"][0]
    assert r1["distance_m"] == 300.0 and r1["eta_minutes"] == 1.0
    assert r1["capacity"] == 3 and r1["load"] == 0
    by_zone = call(world, "find_available_riders", {"zone": "z1", "include_busy": True})
    assert {r["rider_id"] for r in by_zone["riders"]} == {"r1", "r2", "r5"}
    assert next(r for r in by_zone["riders"] if r["rider_id"] == "r5")["load"] == 1


def test_find_available_riders_bad_input(world: Engine) -> None:
    for bad in (
        {"x": 1.0},
        {"radius_m": -5, "zone": "z1"},
        {},
        {"zone": "z1", "limit": 10_000},
        {"zone": "z1", "x": 1, "y": 2, "spy": 1},
    ):
        out = call(world, "find_available_riders", bad)
        assert out["ok"] is False and out["error"] == "invalid_arguments", bad


def test_weather_slows_the_eta(world: Engine) -> None:
    with Session(world) as s:
        s.add(Weather(x=0, y=0, radius_m=10_000, speed_factor=0.5, starts_at=at(0), ends_at=at(200)))
        s.commit()
    out = call(world, "find_available_riders", {"x": 0, "y": 3200, "radius_m": 6000})
    assert out["speed_factor"] == 0.5
    r1 = next(r for r in out["riders"] if r["rider_id"] == "r1")
    assert r1["eta_minutes"] == 21.0  # ceil(3214 m / 160 m/min)


def test_plan_reassignment_bundles_and_reads_only(world: Engine) -> None:
    before = counts(world)
    out = call(world, "plan_reassignment", {"order_ids": ["o1", "o2", "o3", "o4", "o5", "o6"]})
    assert out["ok"] is True, out
    got = {a["order_id"]: a for a in out["assignments"]}
    # o1-o3 share store s1: one rider takes all three
    assert len({got[o]["rider_id"] for o in ("o1", "o2", "o3")}) == 1
    assert sorted(got["o1"]["bundle"]) == ["o1", "o2", "o3"]
    assert got["o1"]["rider_id"] == "r1"
    # r2 (capacity 2) takes the s2 orders; o5 leaves r5
    assert got["o4"]["rider_id"] == got["o5"]["rider_id"] == "r2"
    assert got["o5"]["current_rider_id"] == "r5"
    for a in got.values():
        assert a["pickup_in_minutes"] >= 0 and a["dropoff_in_minutes"] > a["pickup_in_minutes"]
        assert a["on_time"] == (a["lateness_minutes"] <= 0)
    assert {u["order_id"]: u["reason"] for u in out["unassigned"]} == {"o6": "not_plannable"}
    assert out["gap_pct"] is not None and out["gap_pct"] <= 5.0 and out["proven_optimal"] is True
    assert out["lower_bound"] <= out["objective"] + 1e-6
    assert counts(world) == before  # a read tool writes nothing


def test_plan_reassignment_of_orders_none_of_which_is_plannable(world: Engine) -> None:
    out = call(world, "plan_reassignment", {"order_ids": ["o6"]})
    assert out["ok"] is True, out
    assert out["assignments"] == [] and [u["reason"] for u in out["unassigned"]] == ["not_plannable"]


def test_plan_reassignment_reports_why_orders_stay_unassigned(world: Engine) -> None:
    # only r2 (capacity 2) for four orders: two stay unassigned, for lack of capacity
    out = call(world, "plan_reassignment", {"order_ids": ["o1", "o2", "o3", "o4"], "rider_ids": ["r2"]})
    assert len(out["assignments"]) == 2
    assert {u["reason"] for u in out["unassigned"]} == {"capacity_exhausted"}
    assert len(out["unassigned"]) == 2
    # riders that cannot work: the candidate set is empty
    out = call(world, "plan_reassignment", {"order_ids": ["o1"], "rider_ids": ["r3", "r4"]})
    assert out["assignments"] == [] and out["unassigned"][0]["reason"] == "no_candidate_riders"
    out = call(world, "plan_reassignment", {"order_ids": ["nope"]})
    assert out["ok"] is False and out["error"] == "not_found"
    out = call(world, "plan_reassignment", {"order_ids": ["o1"], "rider_ids": ["ghost"]})
    assert out["ok"] is False and out["error"] == "not_found"
    out = call(world, "plan_reassignment", {"exact_time_limit_s": -1, "zone": "z1"})
    assert out["ok"] is False and out["error"] == "invalid_arguments"


def test_plan_reassignment_starts_a_busy_rider_after_its_bag(world: Engine) -> None:
    # r1 sits at the store but carries a bag for a drop-off 8 km away: it is not free now
    with Session(world) as s:
        bag = Order(
            id="o7",
            customer_id="c1",
            store_id="s1",
            x=300,
            y=8000,
            zone="z1",
            status=OrderStatus.picked_up,
            placed_at=at(40),
            ready_at=at(55),
            promised_at=at(80),
            rider_id="r1",
            value_cents=2500,
        )
        s.add(bag)
        rider = s.get(Rider, "r1")
        assert rider is not None
        rider.status = RiderStatus.busy
        s.add(rider)
        s.commit()
    out = call(world, "plan_reassignment", {"order_ids": ["o1"], "rider_ids": ["r1"]})
    [a] = out["assignments"]
    # 8 km out at 320 m/min is 25 min, then ~25 min back to the store: no pickup within 45 minutes
    assert a["rider_id"] == "r1" and a["pickup_in_minutes"] >= 45
    # with r2 free 5 km away (16 min), the solver prefers it
    out = call(world, "plan_reassignment", {"order_ids": ["o1"], "rider_ids": ["r1", "r2"]})
    assert out["assignments"][0]["rider_id"] == "r2"


def test_plan_reassignment_by_zone(world: Engine) -> None:
    out = call(world, "plan_reassignment", {"zone": "z1", "exact_time_limit_s": 0})
    assert {a["order_id"] for a in out["assignments"]} | {u["order_id"] for u in out["unassigned"]} == {
        "o1",
        "o2",
        "o3",
        "o4",
        "o5",
    }
    assert out["gap_pct"] is None


def test_apply_reassignment_moves_orders_through_the_state_machine(world: Engine) -> None:
    out = call(
        world,
        "apply_reassignment",
        {
            "assignments": [
                {"order_id": "o1", "rider_id": "r1"},
                {"order_id": "o3", "rider_id": "r1"},
                {"order_id": "o5", "rider_id": "r2"},
            ]
        },
    )
    assert out["ok"] is True, out
    assert out["rider_loads"] == {"r1": 2, "r2": 1}
    with Session(world) as s:
        o1, o3, o5 = (s.get(Order, i) for i in ("o1", "o3", "o5"))
        assert o1 and o3 and o5
        assert (o1.status, o1.rider_id) == (OrderStatus.assigned, "r1")
        assert (o3.status, o3.rider_id) == (OrderStatus.assigned, "r1")  # picking -> assigned
        assert (o5.status, o5.rider_id) == (OrderStatus.assigned, "r2")  # assigned -> assigned
        r1, r5 = s.get(Rider, "r1"), s.get(Rider, "r5")
        assert r1 and r1.status == RiderStatus.busy
        assert r5 and r5.status == RiderStatus.idle  # nothing left to carry
        evs = list(s.exec(select(OrderEvent).where(OrderEvent.order_id == "o5")))
        assert evs[-1].from_status == "assigned" and evs[-1].to_status == "assigned"
        assert evs[-1].detail["previous_rider_id"] == "r5" and evs[-1].actor == "test"


def test_apply_reassignment_hands_over_a_picked_up_order(world: Engine) -> None:
    with Session(world) as s:
        o5 = s.get(Order, "o5")
        assert o5
        o5.status = OrderStatus.picked_up
        s.add(o5)
        s.commit()
    out = call(world, "apply_reassignment", {"assignments": [{"order_id": "o5", "rider_id": "r1"}]})
    assert out["ok"] is True and out["applied"][0]["from_status"] == "picked_up"


FAILURES = [
    ([{"order_id": "o1", "rider_id": "r1"}, {"order_id": "o6", "rider_id": "r1"}], "illegal_transition"),
    ([{"order_id": "o1", "rider_id": "r3"}], "rider_unavailable"),
    ([{"order_id": "o1", "rider_id": "r4"}], "rider_unavailable"),
    ([{"order_id": "o1", "rider_id": "r5"}], "over_capacity"),  # r5 holds o5, capacity 1
    ([{"order_id": "o1", "rider_id": "ghost"}], "not_found"),
    ([{"order_id": "o1", "rider_id": "r1"}, {"order_id": "zz", "rider_id": "r1"}], "not_found"),
    ([{"order_id": "o1", "rider_id": "r1"}, {"order_id": "o1", "rider_id": "r2"}], "invalid_arguments"),
    ([], "invalid_arguments"),
]


def test_apply_reassignment_changes_nothing_on_failure(world: Engine) -> None:
    before = counts(world)
    for assignments, error in FAILURES:
        out = call(world, "apply_reassignment", {"assignments": assignments})
        assert out["ok"] is False and out["error"] == error, (assignments, out)
        assert counts(world) == before


def test_apply_reassignment_capacity_counts_orders_it_takes_over(world: Engine) -> None:
    # r2 has capacity 2: three orders are one too many, and nothing is applied
    before = counts(world)
    out = call(
        world,
        "apply_reassignment",
        {"assignments": [{"order_id": o, "rider_id": "r2"} for o in ("o1", "o2", "o3")]},
    )
    assert out["error"] == "over_capacity" and "r2" in out["message"]
    assert counts(world) == before
    # moving o5 from r5 to r2 frees r5: r5 may then take o4
    out = call(
        world,
        "apply_reassignment",
        {"assignments": [{"order_id": "o5", "rider_id": "r2"}, {"order_id": "o4", "rider_id": "r5"}]},
    )
    assert out["ok"] is True and out["rider_loads"] == {"r2": 1, "r5": 1}

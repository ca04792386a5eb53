"""Atomic stock changes: one conditional UPDATE decides, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tests.tools.factories import NOW, build_small_world
from tools.base import ToolContext
from tools.inventory.service import add_on_hand, release, release_up_to, reserve, take_on_hand, transfer_leg
from tools.models import Stock, Store


@pytest.fixture
def world(engine: Engine) -> Engine:
    with Session(engine) as s:
        build_small_world(s)
    return engine


def stock(engine: Engine, store: str, sku: str) -> tuple[int, int]:
    with Session(engine) as s:
        row = s.get(Stock, (store, sku))
        assert row is not None
        return row.on_hand, row.reserved


def set_stock(engine: Engine, store: str, sku: str, on_hand: int, reserved: int) -> None:
    with Session(engine) as s:
        row = s.get(Stock, (store, sku))
        assert row is not None
        row.on_hand, row.reserved = on_hand, reserved
        s.add(row)
        s.commit()


def test_reserve_only_what_is_available(world: Engine) -> None:
    with Session(world) as s:
        # D1 milk-1l: 5 on hand, 2 reserved -> 3 available
        assert not reserve(session=s, store_id="D1", sku_id="milk-1l", qty=4)
        assert reserve(session=s, store_id="D1", sku_id="milk-1l", qty=3)
        assert not reserve(session=s, store_id="D1", sku_id="milk-1l", qty=1)
        assert not reserve(session=s, store_id="D1", sku_id="no-such-sku", qty=1)
        s.commit()
    assert stock(world, "D1", "milk-1l") == (5, 5)


def test_release_never_below_zero(world: Engine) -> None:
    with Session(world) as s:
        assert not release(session=s, store_id="D1", sku_id="milk-1l", qty=3)
        assert release(session=s, store_id="D1", sku_id="milk-1l", qty=2)
        release_up_to(session=s, store_id="D1", sku_id="bread", qty=5)
        s.commit()
    assert stock(world, "D1", "milk-1l") == (5, 0)
    assert stock(world, "D1", "bread") == (1, 0)


def test_take_and_add_on_hand(world: Engine) -> None:
    with Session(world) as s:
        assert not take_on_hand(session=s, store_id="D1", sku_id="bread", qty=1)  # the one unit is reserved
        assert take_on_hand(session=s, store_id="D2", sku_id="milk-1l", qty=8)
        add_on_hand(session=s, store_id="D3", sku_id="milk-1l", qty=8)  # D3 had no milk row
        add_on_hand(session=s, store_id="D1", sku_id="milk-1l", qty=1)
        s.commit()
    assert stock(world, "D2", "milk-1l") == (0, 0)
    assert stock(world, "D3", "milk-1l") == (8, 0)
    assert stock(world, "D1", "milk-1l") == (6, 2)


def test_loaded_row_sees_the_update(world: Engine) -> None:
    with Session(world) as s:
        row = s.get(Stock, ("D1", "rye-bread"))
        assert row is not None and row.reserved == 0
        assert reserve(session=s, store_id="D1", sku_id="rye-bread", qty=2)
        assert row.reserved == 2


def test_transfer_leg_follows_travel_rule(world: Engine) -> None:
    with Session(world) as s:
        d1, d2 = s.get(Store, "D1"), s.get(Store, "D2")
        assert d1 and d2
        leg = transfer_leg(session=s, source=d2, destination=d1, now=NOW)
        assert leg.distance_m == 2000
        assert leg.minutes == 20 + 4 + 4  # 2 km at 100 m/min, plus loading at both ends


def test_two_sessions_race_for_the_last_unit(world: Engine) -> None:
    for _trial in range(3):
        set_stock(world, "D1", "rye-bread", on_hand=1, reserved=0)
        barrier = threading.Barrier(2)
        results: list[object] = []

        def attempt(barrier: threading.Barrier = barrier, results: list[object] = results) -> None:
            with Session(world) as s:
                s.get(Stock, ("D1", "rye-bread"))  # both have read "1 available" before either writes
                barrier.wait()
                ok = reserve(session=s, store_id="D1", sku_id="rye-bread", qty=1)
                s.commit()
                results.append(ok)

        threads = [threading.Thread(target=attempt) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(results, key=str) == [False, True]
        assert stock(world, "D1", "rye-bread") == (1, 1)


def test_two_tool_calls_race_for_the_last_unit(world: Engine) -> None:
    """Through Tool.invoke (SAVEPOINT, reads before the write): one wins, the other gets a structured
    refusal, never a second reservation."""
    set_stock(world, "D1", "rye-bread", on_hand=1, reserved=0)
    tool = get_tool_or_fail("reserve_stock")
    barrier = threading.Barrier(2)
    results: list[dict] = []

    def attempt(order_id: str) -> None:
        with Session(world) as s:
            s.get(Stock, ("D1", "rye-bread"))
            barrier.wait()
            out = tool.invoke(
                ToolContext(session=s, now=NOW),
                {"order_id": order_id, "sku_id": "rye-bread", "quantity": 1},
            )
            s.commit()
            results.append(out)

    threads = [threading.Thread(target=attempt, args=(oid,)) for oid in ("O1", "O5")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r["ok"] for r in results) == [False, True]
    loser = next(r for r in results if not r["ok"])
    assert loser["error"] in ("insufficient_stock", "conflict")
    assert stock(world, "D1", "rye-bread") == (1, 1)


def get_tool_or_fail(name: str):  # type: ignore[no-untyped-def]
    from tools.inventory.reserve_stock import reserve_stock

    assert reserve_stock.name == name
    return reserve_stock

"""Write tools run one at a time across sessions and processes (tools.db.lock_world_writes): two calls
at once can never both pass a check that only one may pass. SQLite serialises writers anyway; on
PostgreSQL each of these raced without the lock. And the edges write tools refuse."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from tests.tools.factories import NOW, build_small_world
from tools.base import ToolContext
from tools.models import Compensation, Order, Stock
from tools.registry import all_tools


@pytest.fixture
def world(engine: Engine) -> Engine:
    with Session(engine) as s:
        build_small_world(s)
    return engine


def invoke(engine: Engine, name: str, args: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
    with Session(engine, expire_on_commit=False) as s:
        out = all_tools()[name].invoke(ToolContext(session=s, now=NOW, actor="test", idempotency_key=key), args)
        s.commit()
        return out


def race(engine: Engine, calls: list[tuple[str, dict[str, Any], str | None]]) -> list[dict[str, Any]]:
    """The calls at once, each in its own session, after each has read the orders it names."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int, name: str, args: dict[str, Any], key: str | None) -> None:
        with Session(engine, expire_on_commit=False) as s:
            ids = [args.get("order_id")] + [a["order_id"] for a in args.get("assignments", [])]
            for oid in filter(None, ids):
                s.get(Order, oid)  # each has seen the order as it was before either writes
            barrier.wait()
            try:
                out[i] = all_tools()[name].invoke(
                    ToolContext(session=s, now=NOW, actor="test", idempotency_key=key), args
                )
                s.commit()
            except Exception as exc:  # noqa: BLE001 - an escaped exception fails the assertions below
                out[i] = {"ok": False, "error": f"raised {exc!r}"}

    threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_two_refunds_at_once_never_pass_the_orders_value(world: Engine) -> None:
    # O2 is worth 1,200: 800 + 800 would pass it
    refund = {"order_id": "O2", "kind": "refund", "amount_cents": 800, "reason": "late"}
    results = race(world, [("issue_compensation", refund, "r1"), ("issue_compensation", refund, "r2")])
    assert sorted(r["ok"] for r in results) == [False, True], results
    with Session(world) as s:
        paid = s.exec(select(func.sum(Compensation.amount_cents)).where(Compensation.order_id == "O2")).one()
    assert paid == 800


def test_two_reassignments_at_once_never_overload_a_rider(world: Engine) -> None:
    with world.begin() as c:
        c.execute(text("UPDATE rider SET capacity = 1 WHERE id = 'RA'"))
    calls = [("apply_reassignment", {"assignments": [{"order_id": o, "rider_id": "RA"}]}, None) for o in ("O1", "O5")]
    results = race(world, calls)
    assert sorted(r["ok"] for r in results) == [False, True], results
    with Session(world) as s:
        carried = s.exec(
            select(func.count()).select_from(Order).where(Order.rider_id == "RA", Order.status == "assigned")
        )
        assert carried.one() == 1


def test_the_same_key_twice_at_once_reserves_once(world: Engine) -> None:
    args = {"order_id": "O1", "sku_id": "milk-2l", "quantity": 1, "idempotency_key": "same"}
    results = race(world, [("reserve_stock", args, None), ("reserve_stock", args, None)])
    assert all(r["ok"] for r in results) and sorted(r["duplicate"] for r in results) == [False, True]
    with Session(world) as s:
        row = s.get(Stock, ("D1", "milk-2l"))
        assert row is not None and row.reserved == 1


def test_two_cancels_at_once_cancel_and_release_once(world: Engine) -> None:
    calls = [
        ("cancel_order", {"order_id": "O1", "reason": "customer_request", "idempotency_key": k}, None) for k in "ab"
    ]
    results = race(world, calls)
    assert sorted(r["ok"] for r in results) == [False, True], results
    with Session(world) as s:
        row = s.get(Stock, ("D1", "milk-1l"))
        assert row is not None and row.reserved == 0  # O1's 2 released once, not twice (floored)


def test_reserving_for_a_closed_order_is_refused(world: Engine) -> None:
    out = invoke(world, "reserve_stock", {"order_id": "O4", "sku_id": "milk-2l", "quantity": 1})  # delivered
    assert out["ok"] is False and out["error"] == "illegal_transition"
    with Session(world) as s:
        row = s.get(Stock, ("D1", "milk-2l"))
        assert row is not None and row.reserved == 0


def test_an_order_on_hold_is_not_dispatched(world: Engine) -> None:
    assert invoke(world, "hold_order", {"order_id": "O1", "reason": "address check"})["ok"]
    out = invoke(world, "apply_reassignment", {"assignments": [{"order_id": "O1", "rider_id": "RA"}]})
    assert out["ok"] is False and out["error"] == "conflict"
    with Session(world) as s:
        order = s.get(Order, "O1")
        assert order is not None and order.rider_id is None


def test_a_line_id_past_the_column_is_an_argument_error(world: Engine) -> None:
    out = invoke(world, "substitute_item", {"order_id": "O5", "line_id": 2**31, "substitute_sku_id": "rye-bread"})
    assert out["ok"] is False and out["error"] == "invalid_arguments"

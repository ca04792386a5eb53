"""get_stock, reserve/release_stock, find_substitutes, find_nearby_stock, substitute_item, transfer_stock."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from tests.tools.factories import NOW, add_weather, build_small_world, minutes
from tools.base import ToolContext
from tools.inventory.find_nearby_stock import find_nearby_stock
from tools.inventory.find_substitutes import find_substitutes
from tools.inventory.get_stock import get_stock
from tools.inventory.release_stock import release_stock
from tools.inventory.reserve_stock import reserve_stock
from tools.inventory.stockout import detect_stockouts
from tools.inventory.substitute_item import substitute_item
from tools.inventory.transfer_stock import transfer_stock
from tools.models import Order, OrderLine, Stock


@pytest.fixture
def ctx(engine: Engine):  # type: ignore[no-untyped-def]
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        yield ToolContext(session=s, now=NOW, incident_id="INC-9")


def levels(ctx: ToolContext, store: str, sku: str) -> tuple[int, int]:
    ctx.session.expire_all()
    row = ctx.session.get(Stock, (store, sku))
    return (row.on_hand, row.reserved) if row else (0, 0)


def line_of(ctx: ToolContext, order_id: str) -> OrderLine:
    line = ctx.session.exec(select(OrderLine).where(OrderLine.order_id == order_id)).first()
    assert line is not None
    return line


def test_get_stock(ctx: ToolContext) -> None:
    out = get_stock.invoke(ctx, {"store_id": "D1"})
    by = {i["sku_id"]: (i["on_hand"], i["reserved"], i["available"]) for i in out["items"]}
    assert by == {
        "bread": (1, 1, 0),
        "milk-1l": (5, 2, 3),
        "milk-2l": (10, 0, 10),
        "oat-milk": (10, 0, 10),
        "rye-bread": (3, 0, 3),
        "yogurt": (0, 0, 0),
    }
    some = get_stock.invoke(ctx, {"store_id": "D2", "sku_ids": ["bread", "burger"]})
    assert [(i["sku_id"], i["available"]) for i in some["items"]] == [("bread", 4), ("burger", 0)]
    assert get_stock.invoke(ctx, {"store_id": "D9"})["error"] == "not_found"
    assert get_stock.invoke(ctx, {"store_id": "D1", "sku_ids": ["ghost"]})["error"] == "not_found"
    assert get_stock.invoke(ctx, {"store_id": "D1", "sku_ids": ["x"] * 201})["error"] == "invalid_arguments"


def test_reserve_and_release_tools(ctx: ToolContext) -> None:
    out = reserve_stock.invoke(ctx, {"order_id": "O1", "sku_id": "milk-1l", "quantity": 3, "idempotency_key": "r1"})
    assert (out["ok"], out["available"], out["reserved"]) == (True, 0, 5)
    again = reserve_stock.invoke(ctx, {"order_id": "O1", "sku_id": "milk-1l", "quantity": 3, "idempotency_key": "r1"})
    assert again["duplicate"] and levels(ctx, "D1", "milk-1l") == (5, 5)
    short = reserve_stock.invoke(ctx, {"order_id": "O1", "sku_id": "milk-1l", "quantity": 1})
    assert short["error"] == "insufficient_stock" and short["details"]["available"] == 0
    rel = release_stock.invoke(ctx, {"order_id": "O1", "sku_id": "milk-1l", "quantity": 3, "idempotency_key": "l1"})
    assert rel["ok"] and levels(ctx, "D1", "milk-1l") == (5, 2)
    assert release_stock.invoke(ctx, {"order_id": "O1", "sku_id": "milk-1l", "quantity": 3, "idempotency_key": "l1"})[
        "duplicate"
    ]
    too_much = release_stock.invoke(ctx, {"order_id": "O1", "sku_id": "milk-1l", "quantity": 3})
    assert too_much["error"] == "conflict" and levels(ctx, "D1", "milk-1l") == (5, 2)
    for bad in (
        {"order_id": "O1", "sku_id": "milk-1l", "quantity": 0},
        {"order_id": "O1", "sku_id": "milk-1l", "quantity": -2},
        {"order_id": "O1", "sku_id": "milk-1l", "quantity": 10**6},
        {"order_id": "O1", "sku_id": "milk-1l"},
    ):
        assert reserve_stock.invoke(ctx, bad)["error"] == "invalid_arguments"
    assert reserve_stock.invoke(ctx, {"order_id": "O1", "sku_id": "ghost", "quantity": 1})["error"] == "not_found"
    assert reserve_stock.invoke(ctx, {"order_id": "ghost", "sku_id": "bread", "quantity": 1})["error"] == "not_found"


def test_find_substitutes_band_stock_and_rank(ctx: ToolContext) -> None:
    out = find_substitutes.invoke(ctx, {"store_id": "D1", "sku_id": "milk-1l"})
    # milk-2l (+20c) in band and stocked; yogurt in band but none at D1; oat-milk out of band
    assert [(s["sku_id"], s["price_difference_cents"]) for s in out["substitutes"]] == [("milk-2l", 20)]
    wide = find_substitutes.invoke(ctx, {"store_id": "D1", "sku_id": "milk-1l", "price_band_pct": 100})
    assert [s["sku_id"] for s in wide["substitutes"]] == ["milk-2l", "oat-milk"]
    assert find_substitutes.invoke(ctx, {"store_id": "D1", "sku_id": "milk-1l", "quantity": 11})["substitutes"] == []
    assert (
        find_substitutes.invoke(ctx, {"store_id": "D1", "sku_id": "bread"})["substitutes"][0]["sku_id"] == "rye-bread"
    )
    assert find_substitutes.invoke(ctx, {"store_id": "D1", "sku_id": "ghost"})["error"] == "not_found"
    assert find_substitutes.invoke(ctx, {"store_id": "D1", "sku_id": "bread", "price_band_pct": 500})["error"] == (
        "invalid_arguments"
    )


def test_find_nearby_stock(ctx: ToolContext) -> None:
    out = find_nearby_stock.invoke(ctx, {"store_id": "D1", "sku_id": "bread", "max_distance_m": 50_000})
    assert [(s["store_id"], s["available"], s["distance_m"], s["transfer_minutes"]) for s in out["stores"]] == [
        ("D2", 4, 2000.0, 28),
        ("D3", 8, 20000.0, 208),
    ]
    near = find_nearby_stock.invoke(ctx, {"store_id": "D1", "sku_id": "bread", "quantity": 5, "max_distance_m": 50_000})
    assert [s["store_id"] for s in near["stores"]] == ["D3"]
    assert find_nearby_stock.invoke(ctx, {"store_id": "D1", "sku_id": "bread"})["stores"][0]["store_id"] == "D2"
    add_weather(ctx.session, x=3000, y=0, radius_m=100, factor=0.5)
    slow = find_nearby_stock.invoke(ctx, {"store_id": "D1", "sku_id": "bread"})
    assert slow["stores"][0]["transfer_minutes"] == 40 + 8


def test_substitute_item_never_charges_more(ctx: ToolContext) -> None:
    line = line_of(ctx, "O1")  # 2 x milk-1l at 150, reserved at D1
    out = substitute_item.invoke(
        ctx, {"order_id": "O1", "line_id": line.id, "substitute_sku_id": "milk-2l", "idempotency_key": "s1"}
    )
    assert out["ok"], out
    assert (out["customer_unit_price_cents"], out["customer_price_change_cents"], out["absorbed_cents"]) == (150, 0, 40)
    assert levels(ctx, "D1", "milk-1l") == (5, 0) and levels(ctx, "D1", "milk-2l") == (10, 2)
    ctx.session.refresh(line)
    assert (line.sku_id, line.substituted_from, line.status, line.unit_price_cents) == (
        "milk-2l",
        "milk-1l",
        "substituted",
        150,
    )
    again = substitute_item.invoke(
        ctx, {"order_id": "O1", "line_id": line.id, "substitute_sku_id": "milk-2l", "idempotency_key": "s1"}
    )
    assert again["duplicate"] and levels(ctx, "D1", "milk-2l") == (10, 2)
    # a substituted line is not substituted again under another key
    assert (
        substitute_item.invoke(ctx, {"order_id": "O1", "line_id": line.id, "substitute_sku_id": "yogurt"})["error"]
        == "conflict"
    )


def test_substitute_cheaper_lowers_price_and_refuses_bad_swaps(ctx: ToolContext) -> None:
    o5 = line_of(ctx, "O5")  # 1 x bread (250) at D1
    bad = substitute_item.invoke(ctx, {"order_id": "O5", "line_id": o5.id, "substitute_sku_id": "milk-2l"})
    assert bad["error"] == "invalid_arguments"  # another category
    none = substitute_item.invoke(ctx, {"order_id": "O5", "line_id": o5.id, "substitute_sku_id": "yogurt"})
    assert none["error"] == "invalid_arguments"
    other = line_of(ctx, "O1")
    assert (
        substitute_item.invoke(ctx, {"order_id": "O5", "line_id": other.id, "substitute_sku_id": "rye-bread"})["error"]
        == "not_found"
    )
    assert (
        substitute_item.invoke(ctx, {"order_id": "O5", "line_id": -1, "substitute_sku_id": "rye-bread"})["error"]
        == "invalid_arguments"
    )
    # make rye bread cheaper than bread: the customer pays less
    ctx.session.exec(select(OrderLine))
    from tools.models import Sku

    rye = ctx.session.get(Sku, "rye-bread")
    assert rye is not None
    rye.price_cents = 220
    ctx.session.add(rye)
    ctx.session.commit()
    out = substitute_item.invoke(ctx, {"order_id": "O5", "line_id": o5.id, "substitute_sku_id": "rye-bread"})
    assert (out["customer_unit_price_cents"], out["customer_price_change_cents"], out["absorbed_cents"]) == (
        220,
        -30,
        0,
    )
    order = ctx.session.get(Order, "O5")
    assert order is not None and order.value_cents == 220
    assert levels(ctx, "D1", "bread") == (1, 0) and levels(ctx, "D1", "rye-bread") == (3, 1)
    # after pickup nothing changes any more
    assert (
        substitute_item.invoke(
            ctx, {"order_id": "O3", "line_id": line_of(ctx, "O3").id, "substitute_sku_id": "burger"}
        )["error"]
        == "illegal_transition"
    )


def test_stockout_then_transfer_restores_line(ctx: ToolContext) -> None:
    # the count finds D1's only bread damaged: O5 (bread x1) goes short
    stock = ctx.session.get(Stock, ("D1", "bread"))
    assert stock is not None
    stock.on_hand = 0
    ctx.session.add(stock)
    short = detect_stockouts(session=ctx.session, order_id="O5", now=NOW)
    assert [(s.sku_id, s.quantity, s.on_shelf_for_order) for s in short] == [("bread", 1, 0)]
    assert levels(ctx, "D1", "bread") == (0, 0)
    ctx.session.commit()
    out = transfer_stock.invoke(
        ctx, {"order_id": "O5", "from_store_id": "D2", "sku_id": "bread", "quantity": 1, "idempotency_key": "t1"}
    )
    assert out["ok"], out
    assert (out["transfer_minutes"], out["restored_line_id"]) == (28, line_of(ctx, "O5").id)
    assert out["arrival_at"] == minutes(28).isoformat().replace("+00:00", "Z")
    assert levels(ctx, "D2", "bread") == (3, 0) and levels(ctx, "D1", "bread") == (1, 1)
    order = ctx.session.get(Order, "O5")
    assert order is not None and order.ready_at.replace(tzinfo=None) == minutes(28).replace(tzinfo=None)
    assert line_of(ctx, "O5").status == "ok"
    again = transfer_stock.invoke(
        ctx, {"order_id": "O5", "from_store_id": "D2", "sku_id": "bread", "quantity": 1, "idempotency_key": "t1"}
    )
    assert again["duplicate"] and levels(ctx, "D2", "bread") == (3, 0)


def test_transfer_refusals_change_nothing(ctx: ToolContext) -> None:
    base = {"order_id": "O1", "sku_id": "bread", "quantity": 5}
    assert transfer_stock.invoke(ctx, {**base, "from_store_id": "D2"})["error"] == "insufficient_stock"
    assert transfer_stock.invoke(ctx, {**base, "from_store_id": "D1"})["error"] == "invalid_arguments"
    assert transfer_stock.invoke(ctx, {**base, "from_store_id": "D7"})["error"] == "not_found"
    assert transfer_stock.invoke(ctx, {**base, "from_store_id": "D2", "quantity": 0})["error"] == "invalid_arguments"
    assert (
        transfer_stock.invoke(ctx, {**base, "order_id": "O4", "from_store_id": "D2"})["error"] == "illegal_transition"
    )
    assert levels(ctx, "D2", "bread") == (4, 0) and levels(ctx, "D1", "bread") == (1, 1)


def test_a_write_that_fails_midway_changes_nothing(ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source shelf is already decremented when the failure hits: the SAVEPOINT undoes it."""
    import tools.inventory.transfer_stock as module
    from tools.state_machine import NotFound

    def boom(**_: object) -> None:
        raise NotFound("no route between the stores")

    monkeypatch.setattr(module, "transfer_leg", boom)
    out = transfer_stock.invoke(ctx, {"order_id": "O1", "from_store_id": "D2", "sku_id": "bread", "quantity": 2})
    assert out["error"] == "not_found"
    ctx.session.commit()
    assert levels(ctx, "D2", "bread") == (4, 0) and levels(ctx, "D1", "bread") == (1, 1)
    order = ctx.session.get(Order, "O1")
    assert order is not None and order.version == 0

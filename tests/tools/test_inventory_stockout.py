"""detect_stockouts: the shelf serves reservations first come, first served by placement time."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from tests.tools.factories import NOW, build_small_world, make_order
from tools.inventory.stockout import detect_stockouts
from tools.models import OrderEvent, OrderLine, Stock
from tools.state_machine import NotFound


@pytest.fixture
def session(engine: Engine):  # type: ignore[no-untyped-def]
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        yield s


def test_later_order_goes_short_first(session: Session) -> None:
    # O9 placed after O1 also wants 2 milk; both reserved (5 on hand, 4 reserved) ...
    make_order(session, "O9", store_id="D1", customer_id="C2", x=0, y=0, placed=-2, lines=[("milk-1l", 2, 150)])
    stock = session.get(Stock, ("D1", "milk-1l"))
    assert stock is not None
    stock.reserved = 4
    # ... then the count finds only 3
    stock.on_hand = 3
    session.add(stock)
    session.commit()
    assert detect_stockouts(session=session, order_id="O1", now=NOW) == []  # O1 came first: served
    short = detect_stockouts(session=session, order_id="O9", now=NOW)
    assert [(s.sku_id, s.quantity, s.on_shelf_for_order) for s in short] == [("milk-1l", 2, 1)]
    session.commit()
    line = session.exec(select(OrderLine).where(OrderLine.order_id == "O9")).one()
    assert line.status == "short"
    session.refresh(stock)
    assert (stock.on_hand, stock.reserved) == (3, 2)  # O9's claim given back: only O1's remains
    events = session.exec(select(OrderEvent).where(OrderEvent.order_id == "O9")).all()
    assert [(e.kind, e.detail["short"][0]["sku_id"]) for e in events] == [("stockout", "milk-1l")]
    # nothing new the second time
    assert detect_stockouts(session=session, order_id="O9", now=NOW) == []


def test_no_stock_row_closed_orders_and_unknown_ids(session: Session) -> None:
    make_order(session, "O10", store_id="D2", customer_id="C1", x=0, y=0, lines=[("yogurt", 1, 160)])
    session.commit()
    assert [s.sku_id for s in detect_stockouts(session=session, order_id="O10", now=NOW)] == ["yogurt"]
    assert detect_stockouts(session=session, order_id="O4", now=NOW) == []  # delivered
    assert detect_stockouts(session=session, order_id="O5", now=NOW) == []  # its bread is there
    with pytest.raises(NotFound):
        detect_stockouts(session=session, order_id="ghost", now=NOW)


def test_stockout_path_on_the_small_preset(engine: Engine) -> None:
    """End to end on H1's generated `small` world: the reference stockout is found, a nearby store has
    the SKU, the transfer restores the line and moves the ready time."""
    from tools.base import ToolContext
    from tools.inventory.find_nearby_stock import find_nearby_stock
    from tools.inventory.transfer_stock import transfer_stock
    from tools.orders.get_order import get_order
    from tools.orders.list_orders_at_risk import list_orders_at_risk
    from tools.service import world_now
    from tools.world.generate import generate_world

    with Session(engine, expire_on_commit=False) as s:
        event = generate_world(session=s, preset="small", seed=7).events[0]
        s.commit()
        now = world_now(session=s)
        order_id, store_id, sku = event.order_ids[0], event.store_ids[0], event.payload["sku_id"]
        short = detect_stockouts(session=s, order_id=order_id, now=now)
        assert [x.sku_id for x in short] == [sku]
        s.commit()
        ctx = ToolContext(session=s, now=now, incident_id="INC-S")
        nearby = find_nearby_stock.invoke(ctx, {"store_id": store_id, "sku_id": sku, "quantity": short[0].quantity})
        assert nearby["ok"] and nearby["stores"], nearby
        source = nearby["stores"][0]
        out = transfer_stock.invoke(
            ctx,
            {"order_id": order_id, "from_store_id": source["store_id"], "sku_id": sku, "quantity": short[0].quantity},
        )
        assert out["ok"] and out["restored_line_id"] == short[0].line_id, out
        assert out["transfer_minutes"] == source["transfer_minutes"]
        view = get_order.invoke(ctx, {"order_id": order_id})
        assert all(line["status"] == "ok" for line in view["lines"])
        assert [h["kind"] for h in view["history"]][-2:] == ["stockout", "transfer_stock"]
        risk = list_orders_at_risk.invoke(ctx, {"horizon_minutes": 720})
        assert risk["ok"] and all(o["minutes_late"] > 0 for o in risk["orders"])

"""get_order and list_orders_at_risk on the small world."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tests.tools.factories import INJECTION, NOW, build_small_world, minutes
from tools.base import ToolContext
from tools.models import Order
from tools.orders.get_order import get_order
from tools.orders.list_orders_at_risk import list_orders_at_risk
from tools.service import transition_order
from tools.state_machine import OrderStatus


@pytest.fixture
def ctx(engine: Engine):  # type: ignore[no-untyped-def]
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        yield ToolContext(session=s, now=NOW)


def test_get_order_shows_lines_times_history_and_prediction(ctx: ToolContext) -> None:
    o5 = ctx.session.get(Order, "O5")
    assert o5 is not None
    transition_order(session=ctx.session, order=o5, to=OrderStatus.ready, at=minutes(1), actor="store")
    ctx.session.commit()
    out = get_order.invoke(ctx, {"order_id": "O5"})
    assert out["ok"] is True
    assert (out["status"], out["customer_id"], out["store_id"], out["rider_id"]) == ("ready", "C3", "D1", None)
    assert out["lines"] == [
        {
            "line_id": out["lines"][0]["line_id"],
            "sku_id": "bread",
            "sku_name": "Bread",
            "category": "bakery",
            "quantity": 1,
            "unit_price_cents": 250,
            "status": "ok",
            "substituted_from": None,
        }
    ]
    assert [(h["kind"], h["from_status"], h["to_status"], h["actor"]) for h in out["history"]] == [
        ("transition", "picking", "ready", "store")
    ]
    assert out["version"] == 1
    assert out["predicted_dropoff_at"] is not None and out["predicted_minutes_late"] > 0
    # the injection is handed over as labelled data, verbatim, never acted upon
    assert out["customer_note"] == INJECTION
    # closed orders: no prediction
    done = get_order.invoke(ctx, {"order_id": "O4"})
    assert done["status"] == "delivered" and done["predicted_dropoff_at"] is None
    assert done["delivered_at"] is not None


def test_get_order_bad_input(ctx: ToolContext) -> None:
    assert get_order.invoke(ctx, {"order_id": "nope"})["error"] == "not_found"
    assert get_order.invoke(ctx, {"order_id": ""})["error"] == "invalid_arguments"
    assert get_order.invoke(ctx, {"order_id": "x" * 65})["error"] == "invalid_arguments"
    assert get_order.invoke(ctx, {"order_id": "O1", "extra": 1})["error"] == "invalid_arguments"


def test_list_orders_at_risk_sorted_by_lateness(ctx: ToolContext) -> None:
    out = list_orders_at_risk.invoke(ctx, {"horizon_minutes": 120})
    # by hand (see test_orders_eta): O5 68, O7 58, O1 53, O2 32 late; O3, O8 early
    assert [(o["order_id"], o["minutes_late"]) for o in out["orders"]] == [
        ("O5", 68.0),
        ("O7", 58.0),
        ("O1", 53.0),
        ("O2", 32.0),
    ]
    assert out["total_at_risk"] == 4
    o2 = out["orders"][3]
    assert (o2["rider_id"], o2["predicted_rider_id"], o2["basis"], o2["status"]) == ("RB", "RB", "assigned", "assigned")
    # horizon: only O7 (overdue) and O2 (due at +20) are promised within 30 minutes
    assert [o["order_id"] for o in list_orders_at_risk.invoke(ctx, {"horizon_minutes": 30})["orders"]] == ["O7", "O2"]
    # threshold and limit
    out = list_orders_at_risk.invoke(ctx, {"horizon_minutes": 120, "min_minutes_late": 55, "limit": 1})
    assert [o["order_id"] for o in out["orders"]] == ["O5"] and out["total_at_risk"] == 2


def test_list_orders_at_risk_by_zone_and_area(ctx: ToolContext) -> None:
    assert list_orders_at_risk.invoke(ctx, {"zone": "south", "horizon_minutes": 120})["orders"] == []
    # a 600 m disc around D2 holds O7's store (its drop-off is 3 km away)
    out = list_orders_at_risk.invoke(ctx, {"x": 3000, "y": 0, "radius_m": 600, "horizon_minutes": 120})
    assert [o["order_id"] for o in out["orders"]] == ["O7"]
    # around O2's drop-off
    out = list_orders_at_risk.invoke(ctx, {"x": 0, "y": 2100, "radius_m": 200, "horizon_minutes": 120})
    assert [o["order_id"] for o in out["orders"]] == ["O2"]


def test_list_orders_at_risk_refuses_absurd_arguments() -> None:
    no_db = ToolContext(session=None, now=NOW)  # type: ignore[arg-type]  # validation fails first
    for bad in (
        {"horizon_minutes": 0},
        {"horizon_minutes": 100000},
        {"limit": -1},
        {"min_minutes_late": -5},
        {"x": 1, "y": 2},  # radius missing
        {"x": 1, "y": 2, "radius_m": -3},
        {"zone": "z" * 65},
    ):
        assert list_orders_at_risk.invoke(no_db, bad)["error"] == "invalid_arguments", bad


def test_an_order_placed_later_in_a_replayed_day_is_not_there_yet(ctx: ToolContext) -> None:
    """A replayed real day holds all its orders from the start; one placed after now is still
    ``placed``. It is neither forecast nor at risk, and takes no rider from the orders that exist:
    every prediction stays as it was without it."""
    from tests.tools.factories import make_order
    from tools.orders.eta import predict_dropoffs

    before = predict_dropoffs(session=ctx.session, now=NOW)
    # an order near RA, due soon: once placed (at +5) it would be late and take RA first
    make_order(
        ctx.session,
        "LATER",
        store_id="D1",
        customer_id="C2",
        x=1500,
        y=0,
        status=OrderStatus.placed,
        placed=5,
        ready=-30,
        promised=10,
    )
    ctx.session.commit()
    after = predict_dropoffs(session=ctx.session, now=NOW)
    assert "LATER" not in after and after == before
    listed = list_orders_at_risk.invoke(ctx, {"horizon_minutes": 240})
    assert "LATER" not in [o["order_id"] for o in listed["orders"]]
    # once placed it is there (its status still placed: not yet confirmed by the store)
    later = predict_dropoffs(session=ctx.session, now=minutes(6))
    assert "LATER" in later and later["LATER"].late

"""Tool: give back units an order reserved at its store."""

from __future__ import annotations

from pydantic import Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.reserve_stock import StockChange, stock_change
from tools.inventory.service import get_sku, release
from tools.models import aware
from tools.orders.service import find_keyed_event, idempotency_key
from tools.service import get_order, record_order_event
from tools.state_machine import Conflict


class ReleaseStockArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64, description="the order the units were reserved for")
    sku_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=100)
    idempotency_key: str | None = Field(default=None, max_length=128, description="same key = released once")


@tool(args=ReleaseStockArgs, result=StockChange, writes=True, family="inventory")
def release_stock(ctx: ToolContext, args: ReleaseStockArgs) -> StockChange | ToolError:
    """Give back units of a SKU reserved at the order's store, making them available again. Refused
    (conflict) when fewer units are reserved. Retrying with the same idempotency key releases once."""
    s = ctx.session
    order = get_order(session=s, order_id=args.order_id)
    get_sku(session=s, sku_id=args.sku_id)
    key = idempotency_key(ctx=ctx, explicit=args.idempotency_key, tool="release_stock", args=args)
    duplicate = find_keyed_event(session=s, order_id=order.id, kind="release_stock", key=key) is not None
    if not duplicate:
        if not release(session=s, store_id=order.store_id, sku_id=args.sku_id, qty=args.quantity):
            raise Conflict(
                f"store {order.store_id} has fewer than {args.quantity} of {args.sku_id} reserved",
                store_id=order.store_id,
                sku_id=args.sku_id,
            )
        record_order_event(
            session=s,
            order_id=order.id,
            at=aware(ctx.now),
            kind="release_stock",
            actor=ctx.actor,
            detail={"idempotency_key": key, "sku_id": args.sku_id, "quantity": args.quantity},
        )
        s.flush()
    return stock_change(ctx, order.id, order.store_id, args.sku_id, args.quantity, duplicate)

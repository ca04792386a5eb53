"""Tool: reserve units of a SKU at an order's store for that order."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import get_sku, get_stock_row, reserve
from tools.inventory.stockout import claims_shelf
from tools.models import aware
from tools.orders.service import find_keyed_event, idempotency_key
from tools.service import get_order, record_order_event
from tools.state_machine import IllegalTransition, InsufficientStock, OrderStatus


class ReserveStockArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64, description="the order the units are for")
    sku_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=100)
    idempotency_key: str | None = Field(default=None, max_length=128, description="same key = reserved once")


class StockChange(BaseModel):
    order_id: str
    store_id: str
    sku_id: str
    quantity: int
    on_hand: int
    reserved: int
    available: int
    duplicate: bool = Field(description="True when this key was already applied: nothing changed now")


@tool(args=ReserveStockArgs, result=StockChange, writes=True, family="inventory")
def reserve_stock(ctx: ToolContext, args: ReserveStockArgs) -> StockChange | ToolError:
    """Reserve units of a SKU at the order's store for the order, only if that many are available
    (insufficient_stock error otherwise; two reservations can never share the last unit). Retrying with
    the same idempotency key reserves once."""
    s = ctx.session
    order = get_order(session=s, order_id=args.order_id)
    get_sku(session=s, sku_id=args.sku_id)
    key = idempotency_key(ctx=ctx, explicit=args.idempotency_key, tool="reserve_stock", args=args)
    duplicate = find_keyed_event(session=s, order_id=order.id, kind="reserve_stock", key=key) is not None
    if not duplicate and not claims_shelf(order, ctx.now):
        # a closed or picked order would hold the units for good: nothing ever releases them
        status = OrderStatus(order.status)
        raise IllegalTransition(
            f"order {order.id} is {status.value}: stock can only be reserved before picking is done",
            order_id=order.id,
            current=status.value,
        )
    if not duplicate:
        if not reserve(session=s, store_id=order.store_id, sku_id=args.sku_id, qty=args.quantity):
            row = get_stock_row(session=s, store_id=order.store_id, sku_id=args.sku_id)
            raise InsufficientStock(
                f"store {order.store_id} has {row.available if row else 0} of {args.sku_id} available,"
                f" {args.quantity} asked",
                store_id=order.store_id,
                sku_id=args.sku_id,
                available=row.available if row else 0,
            )
        record_order_event(
            session=s,
            order_id=order.id,
            at=aware(ctx.now),
            kind="reserve_stock",
            actor=ctx.actor,
            detail={"idempotency_key": key, "sku_id": args.sku_id, "quantity": args.quantity},
        )
        s.flush()
    return stock_change(ctx, order.id, order.store_id, args.sku_id, args.quantity, duplicate)


def stock_change(ctx: ToolContext, order_id: str, store_id: str, sku_id: str, qty: int, duplicate: bool) -> StockChange:
    row = get_stock_row(session=ctx.session, store_id=store_id, sku_id=sku_id)
    on_hand, reserved = (row.on_hand, row.reserved) if row else (0, 0)
    return StockChange(
        order_id=order_id,
        store_id=store_id,
        sku_id=sku_id,
        quantity=qty,
        on_hand=on_hand,
        reserved=reserved,
        available=on_hand - reserved,
        duplicate=duplicate,
    )

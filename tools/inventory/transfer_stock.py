"""Tool: bring units of a SKU from another store to an order's store.

The model: the units leave the source shelf at once (an atomic conditional decrement of its
available units) and count as on hand at the order's store at once, so they can be reserved
straight away; physically they arrive after the transfer time (travel by the travel rule with the
weather now, plus loading at both ends), so the order's ready time moves to that arrival when it is
later. If the order has a short line for that SKU that the units cover, it is reserved and made ok
again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlmodel import col, select

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import add_on_hand, get_sku, get_stock_row, reserve, take_on_hand, transfer_leg
from tools.inventory.stockout import claims_shelf
from tools.models import OrderLine, aware
from tools.orders.service import find_keyed_event, idempotency_key
from tools.service import get_order, get_store, record_order_event
from tools.state_machine import IllegalTransition, InsufficientStock, OrderStatus


class TransferStockArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64, description="the order that needs the units")
    from_store_id: str = Field(min_length=1, max_length=64, description="e.g. from find_nearby_stock")
    sku_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=100)
    idempotency_key: str | None = Field(default=None, max_length=128, description="same key = moved once")


class TransferResult(BaseModel):
    order_id: str
    from_store_id: str
    to_store_id: str
    sku_id: str
    quantity: int
    distance_m: float
    transfer_minutes: int
    arrival_at: datetime
    ready_at: datetime = Field(description="the order's ready time after the transfer")
    restored_line_id: int | None = Field(description="the short line now reserved and ok again, if any")
    duplicate: bool = Field(description="True when this key was already applied: nothing changed now")


@tool(args=TransferStockArgs, result=TransferResult, writes=True, family="inventory")
def transfer_stock(ctx: ToolContext, args: TransferStockArgs) -> TransferResult | ToolError:
    """Move available units of a SKU from another store to the order's store before pickup: the source
    loses them at once (refused if it has too few available), the order's store can use them at once,
    and the order's ready time moves to the transfer's arrival. A short line of that SKU that the units
    cover is reserved and restored. Retrying with the same idempotency key moves once."""
    s = ctx.session
    order = get_order(session=s, order_id=args.order_id)
    key = idempotency_key(ctx=ctx, explicit=args.idempotency_key, tool="transfer_stock", args=args)
    done = find_keyed_event(session=s, order_id=order.id, kind="transfer_stock", key=key)
    if done is not None:
        return TransferResult(**{**done.detail["result"], "duplicate": True})
    status = OrderStatus(order.status)
    if not claims_shelf(order, ctx.now):
        raise IllegalTransition(
            f"order {order.id} is {status.value}: stock can only be brought before picking is done",
            order_id=order.id,
            current=status.value,
        )
    source = get_store(session=s, store_id=args.from_store_id)
    dest = get_store(session=s, store_id=order.store_id)
    get_sku(session=s, sku_id=args.sku_id)
    if source.id == dest.id:
        return ToolError(error="invalid_arguments", message="the source store is the order's own store")
    if not take_on_hand(session=s, store_id=source.id, sku_id=args.sku_id, qty=args.quantity):
        row = get_stock_row(session=s, store_id=source.id, sku_id=args.sku_id)
        raise InsufficientStock(
            f"store {source.id} has {row.available if row else 0} of {args.sku_id} available, {args.quantity} asked",
            store_id=source.id,
            sku_id=args.sku_id,
        )
    add_on_hand(session=s, store_id=dest.id, sku_id=args.sku_id, qty=args.quantity)
    now = aware(ctx.now)
    leg = transfer_leg(session=s, source=source, destination=dest, now=now)
    arrival = now + timedelta(minutes=leg.minutes)
    order.ready_at = max(aware(order.ready_at), arrival)
    restored = None
    short = s.exec(
        select(OrderLine)
        .where(
            col(OrderLine.order_id) == order.id,
            col(OrderLine.sku_id) == args.sku_id,
            col(OrderLine.status) == "short",
            col(OrderLine.quantity) <= args.quantity,
        )
        .order_by(col(OrderLine.id))
    ).first()
    if short is not None and reserve(session=s, store_id=dest.id, sku_id=args.sku_id, qty=short.quantity):
        short.status = "ok"
        s.add(short)
        restored = short.id
    order.version += 1
    s.add(order)
    result = TransferResult(
        order_id=order.id,
        from_store_id=source.id,
        to_store_id=dest.id,
        sku_id=args.sku_id,
        quantity=args.quantity,
        distance_m=round(leg.distance_m, 1),
        transfer_minutes=leg.minutes,
        arrival_at=arrival,
        ready_at=aware(order.ready_at),
        restored_line_id=restored,
        duplicate=False,
    )
    record_order_event(
        session=s,
        order_id=order.id,
        at=now,
        kind="transfer_stock",
        actor=ctx.actor,
        detail={"idempotency_key": key, "result": result.model_dump(mode="json")},
    )
    s.flush()
    return result

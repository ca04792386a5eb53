"""Tool: cancel an order from a state that allows it and give back its reserved stock."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlmodel import col, select

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import release_up_to
from tools.inventory.stockout import LIVE_LINE, claims_shelf
from tools.models import Order, OrderLine, Rider, RiderStatus, aware
from tools.orders.service import find_keyed_event, idempotency_key
from tools.orders.templates import CancelReason
from tools.service import get_order, transition_order
from tools.state_machine import ACTIVE, OrderStatus, check_transition


class CancelOrderArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64)
    reason: CancelReason = Field(description="why the order is cancelled")
    idempotency_key: str | None = Field(default=None, max_length=128, description="same key = cancelled once")


class ReleasedLine(BaseModel):
    sku_id: str
    quantity: int


class CancelResult(BaseModel):
    order_id: str
    previous_status: str
    status: str
    released: list[ReleasedLine] = Field(description="reserved units given back to the store")
    version: int
    duplicate: bool = Field(default=False, description="True when this key already cancelled the order")


@tool(args=CancelOrderArgs, result=CancelResult, writes=True, family="orders")
def cancel_order(ctx: ToolContext, args: CancelOrderArgs) -> CancelResult | ToolError:
    """Cancel an order. Allowed only before the food is picked up (placed, confirmed, picking, ready,
    assigned); otherwise the result is an illegal_transition error. The rider is freed and units still
    reserved on the store's shelf go back to it. Refunds are a separate step (issue_compensation)."""
    s = ctx.session
    order = get_order(session=s, order_id=args.order_id)
    key = idempotency_key(ctx=ctx, explicit=args.idempotency_key, tool="cancel_order", args=args)
    done = find_keyed_event(session=s, order_id=order.id, kind="transition", key=key)
    if done is not None and done.to_status == OrderStatus.cancelled.value:
        # a retried step: report the cancellation it already made instead of an illegal transition
        return CancelResult(
            order_id=order.id,
            previous_status=done.from_status or "",
            status=OrderStatus.cancelled.value,
            released=[ReleasedLine(**r) for r in done.detail.get("released", [])],
            version=order.version,
            duplicate=True,
        )
    previous = OrderStatus(order.status)
    check_transition(previous, OrderStatus.cancelled, order_id=order.id)
    released: list[ReleasedLine] = []
    if claims_shelf(order, ctx.now):
        for line in s.exec(
            select(OrderLine).where(col(OrderLine.order_id) == order.id, col(OrderLine.status).in_(LIVE_LINE))
        ):
            n = release_up_to(session=s, store_id=order.store_id, sku_id=line.sku_id, qty=line.quantity)
            if n:
                released.append(ReleasedLine(sku_id=line.sku_id, quantity=n))
    transition_order(
        session=s,
        order=order,
        to=OrderStatus.cancelled,
        at=aware(ctx.now),
        actor=ctx.actor,
        detail={
            "reason": args.reason,
            "incident_id": ctx.incident_id,
            "idempotency_key": key,
            "released": [r.model_dump() for r in released],
        },
    )
    rider_id = order.rider_id
    order.rider_id = None
    s.add(order)
    if rider_id is not None:
        _free_rider_if_idle(ctx, rider_id)
    s.flush()
    return CancelResult(
        order_id=order.id,
        previous_status=previous.value,
        status=OrderStatus.cancelled.value,
        released=released,
        version=order.version,
    )


def _free_rider_if_idle(ctx: ToolContext, rider_id: str) -> None:
    """A busy rider left with no other active order is idle again."""
    s = ctx.session
    s.flush()
    rider = s.get(Rider, rider_id)
    if rider is None or rider.status != RiderStatus.busy:
        return
    others = s.exec(
        select(Order.id).where(col(Order.rider_id) == rider_id, col(Order.status).in_([x.value for x in ACTIVE]))
    ).first()
    if others is None:
        rider.status = RiderStatus.idle
        rider.free_at = aware(ctx.now)
        s.add(rider)

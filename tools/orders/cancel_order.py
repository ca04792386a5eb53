"""Tool: cancel an order from a state that allows it and give back its reserved stock."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlmodel import col, select

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import release_up_to
from tools.inventory.stockout import HOLDING, LIVE_LINE
from tools.models import Order, OrderLine, Rider, RiderStatus, aware
from tools.orders.templates import CancelReason
from tools.service import get_order, transition_order
from tools.state_machine import ACTIVE, OrderStatus


class CancelOrderArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64)
    reason: CancelReason = Field(description="why the order is cancelled")


class ReleasedLine(BaseModel):
    sku_id: str
    quantity: int


class CancelResult(BaseModel):
    order_id: str
    previous_status: str
    status: str
    released: list[ReleasedLine] = Field(description="reserved units given back to the store")
    version: int


@tool(args=CancelOrderArgs, result=CancelResult, writes=True, family="orders")
def cancel_order(ctx: ToolContext, args: CancelOrderArgs) -> CancelResult | ToolError:
    """Cancel an order. Allowed only before the food is picked up (placed, confirmed, picking, ready,
    assigned); otherwise the result is an illegal_transition error. The rider is freed and the order's
    reserved stock goes back to the store. Refunds are a separate step (issue_compensation)."""
    s = ctx.session
    order = get_order(session=s, order_id=args.order_id)
    previous = OrderStatus(order.status)
    holds_stock = previous in HOLDING
    transition_order(
        session=s,
        order=order,
        to=OrderStatus.cancelled,
        at=aware(ctx.now),
        actor=ctx.actor,
        detail={"reason": args.reason, "incident_id": ctx.incident_id},
    )
    rider_id = order.rider_id
    order.rider_id = None
    s.add(order)
    if rider_id is not None:
        _free_rider_if_idle(ctx, rider_id)
    released: list[ReleasedLine] = []
    if holds_stock:
        for line in s.exec(
            select(OrderLine).where(col(OrderLine.order_id) == order.id, col(OrderLine.status).in_(LIVE_LINE))
        ):
            release_up_to(session=s, store_id=order.store_id, sku_id=line.sku_id, qty=line.quantity)
            released.append(ReleasedLine(sku_id=line.sku_id, quantity=line.quantity))
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

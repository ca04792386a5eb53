"""Tool: put an order on hold (or lift the hold) before it is picked up."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.models import aware
from tools.service import get_order, record_order_event
from tools.state_machine import IllegalTransition, OrderStatus

# once the food is in a bag, holding it would only make it later
HOLDABLE = frozenset(
    {OrderStatus.placed, OrderStatus.confirmed, OrderStatus.picking, OrderStatus.ready, OrderStatus.assigned}
)


class HoldOrderArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500, description="why, for the order history")
    release: bool = Field(default=False, description="true lifts an existing hold")


class HoldResult(BaseModel):
    order_id: str
    status: str
    on_hold: bool
    changed: bool = Field(description="False when the order already was in the requested state")
    version: int


@tool(args=HoldOrderArgs, result=HoldResult, writes=True, family="orders")
def hold_order(ctx: ToolContext, args: HoldOrderArgs) -> HoldResult | ToolError:
    """Put an order on hold so it is not dispatched or picked up until the hold is lifted (release=true),
    e.g. while a stockout or an address is being sorted out. Only orders not yet picked up can be held.
    Holding a held order changes nothing."""
    order = get_order(session=ctx.session, order_id=args.order_id)
    status = OrderStatus(order.status)
    want = not args.release
    if want and status not in HOLDABLE:
        raise IllegalTransition(
            f"order {order.id} is {status.value}: only orders not yet picked up can be held",
            order_id=order.id,
            current=status.value,
        )
    changed = order.on_hold != want
    if changed:
        order.on_hold = want
        order.version += 1
        ctx.session.add(order)
        record_order_event(
            session=ctx.session,
            order_id=order.id,
            at=aware(ctx.now),
            kind="hold" if want else "hold_released",
            actor=ctx.actor,
            detail={"reason": args.reason, "incident_id": ctx.incident_id},
        )
        ctx.session.flush()
    return HoldResult(
        order_id=order.id, status=status.value, on_hold=order.on_hold, changed=changed, version=order.version
    )

"""Tool: raise an order's dispatch priority."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.models import aware
from tools.service import get_order, record_order_event
from tools.state_machine import ACTIVE, IllegalTransition, OrderStatus

MAX_PRIORITY = 3


class ExpediteOrderArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64)
    priority: int = Field(default=1, ge=1, le=MAX_PRIORITY, description="1 = expedited ... 3 = most urgent")
    reason: str = Field(default="", max_length=500, description="why, for the order history")


class ExpediteResult(BaseModel):
    order_id: str
    previous_priority: int
    priority: int
    changed: bool = Field(description="False when the order already had at least this priority")
    version: int


@tool(args=ExpediteOrderArgs, result=ExpediteResult, writes=True, family="orders")
def expedite_order(ctx: ToolContext, args: ExpediteOrderArgs) -> ExpediteResult | ToolError:
    """Raise an active order's priority (1-3) so dispatch and the store handle it before others. The
    priority never goes down and repeating the call changes nothing, so retries are safe."""
    order = get_order(session=ctx.session, order_id=args.order_id)
    status = OrderStatus(order.status)
    if status not in ACTIVE:
        raise IllegalTransition(
            f"order {order.id} is {status.value}: closed orders cannot be expedited",
            order_id=order.id,
            current=status.value,
        )
    before = order.priority
    changed = args.priority > before
    if changed:
        order.priority = args.priority
        order.version += 1
        ctx.session.add(order)
        record_order_event(
            session=ctx.session,
            order_id=order.id,
            at=aware(ctx.now),
            kind="expedite",
            actor=ctx.actor,
            detail={"from": before, "to": args.priority, "reason": args.reason, "incident_id": ctx.incident_id},
        )
        ctx.session.flush()
    return ExpediteResult(
        order_id=order.id, previous_priority=before, priority=order.priority, changed=changed, version=order.version
    )

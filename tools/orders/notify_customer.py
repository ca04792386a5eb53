"""Tool: send the customer one of the fixed templated messages about an order, once per key."""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel, Field
from sqlmodel import col, select

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.models import Compensation, Order, OrderLine, Sku, aware
from tools.orders.eta import ETA_CACHE, PredictionCache, predict_dropoffs
from tools.orders.service import idempotency_key, record_notification
from tools.orders.templates import REASON_PHRASES, CancelReason, TemplateName, format_money, render
from tools.service import get_customer, get_order, get_store


class NotifyCustomerArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64)
    template: TemplateName = Field(description="which fixed message to send")
    reason: CancelReason | None = Field(default=None, description="required for the cancellation template")
    amount_cents: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="refund template: the amount refunded; default the order's latest refund or credit",
    )
    idempotency_key: str | None = Field(default=None, max_length=128, description="same key = sent once")


class NotificationResult(BaseModel):
    notification_id: int
    order_id: str
    customer_id: str
    template: str
    channel: str
    message: str
    idempotency_key: str
    duplicate: bool = Field(description="True when this key was already sent: nothing new was sent")
    created_at: datetime


@tool(args=NotifyCustomerArgs, result=NotificationResult, writes=True, family="orders")
def notify_customer(ctx: ToolContext, args: NotifyCustomerArgs) -> NotificationResult | ToolError:
    """Send the order's customer a message from a fixed set of templates (delay, substitution, refund,
    address_confirm, cancellation, generic_apology), filled with facts from the order (new ETA,
    substituted items, refunded amount, cancellation reason). No free text can be added. Sending again
    with the same idempotency key sends nothing new."""
    s = ctx.session
    order = get_order(session=s, order_id=args.order_id)
    customer = get_customer(session=s, customer_id=order.customer_id)
    facts = _facts(ctx, order, args)
    if isinstance(facts, ToolError):
        return facts
    key = idempotency_key(ctx=ctx, explicit=args.idempotency_key, tool="notify_customer", args=args)
    row, created = record_notification(
        session=s,
        order_id=order.id,
        customer_id=customer.id,
        template=args.template,
        message=render(args.template, facts),
        channel=customer.channel,
        key=key,
        now=aware(ctx.now),
    )
    return NotificationResult(
        notification_id=row.id or 0,
        order_id=order.id,
        customer_id=customer.id,
        template=row.template,
        channel=row.channel,
        message=row.message,
        idempotency_key=key,
        duplicate=not created,
        created_at=aware(row.created_at),
    )


def _facts(ctx: ToolContext, order: Order, args: NotifyCustomerArgs) -> dict[str, str] | ToolError:
    s = ctx.session
    facts = {"order_id": order.id, "store_name": get_store(session=s, store_id=order.store_id).name}
    if args.template == "delay":
        # an executor running many notices shares one whole-world prediction (same answer: the whole
        # world is simulated for any one order)
        cache = ctx.extras.get(ETA_CACHE)
        if isinstance(cache, PredictionCache):
            pred = cache.predict(session=s, now=ctx.now).get(order.id)
        else:
            pred = predict_dropoffs(session=s, order_ids=[order.id], now=ctx.now).get(order.id)
        if pred is None:
            return ToolError(error="illegal_transition", message=f"order {order.id} is closed: no delay to announce")
        eta = pred.dropoff_at
        facts["eta_time"] = eta.strftime("%H:%M")
        facts["eta_minutes"] = str(max(0, math.ceil((eta - aware(ctx.now)).total_seconds() / 60)))
    elif args.template == "substitution":
        rows = s.exec(
            select(OrderLine, Sku)
            .join(Sku, col(Sku.id) == col(OrderLine.sku_id))
            .where(col(OrderLine.order_id) == order.id, col(OrderLine.status) == "substituted")
            .order_by(col(OrderLine.id))
        ).all()
        if not rows:
            return ToolError(error="invalid_arguments", message=f"order {order.id} has no substituted line")
        names = {
            k.id: k.name for k in s.exec(select(Sku).where(col(Sku.id).in_([ln.substituted_from for ln, _ in rows])))
        }
        facts["substitutions"] = "; ".join(
            f"{names.get(line.substituted_from or '', line.substituted_from)} was replaced by {sku.name}"
            for line, sku in rows
        )
    elif args.template == "refund":
        amount = args.amount_cents
        if amount is None:
            comp = s.exec(
                select(Compensation)
                .where(col(Compensation.order_id) == order.id, col(Compensation.kind).in_(["refund", "credit"]))
                .order_by(col(Compensation.created_at).desc(), col(Compensation.id).desc())
            ).first()
            if comp is None:
                return ToolError(
                    error="invalid_arguments",
                    message=f"order {order.id} has no refund recorded; give amount_cents",
                )
            amount = comp.amount_cents
        facts["amount"] = format_money(amount, order.currency)
    elif args.template == "cancellation":
        if args.reason is None:
            return ToolError(error="invalid_arguments", message="the cancellation template needs a reason")
        facts["reason"] = REASON_PHRASES[args.reason]
    return facts

"""Tool: pay a compensation (coupon, store credit or refund) for an order, exactly once per key."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.compensation import service
from tools.models import Compensation, CompensationKind, Customer, aware
from tools.service import get_order

# a sanity bound on one payment; the approval thresholds live in the guardrails policy
MAX_AMOUNT_CENTS = 100_000


class IssueCompensationArgs(ToolArgs):
    order_id: str = Field(min_length=1)
    kind: Literal["coupon", "credit", "refund"]
    amount_cents: int = Field(gt=0, le=MAX_AMOUNT_CENTS)
    reason: str = Field(min_length=1, max_length=500)
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Retrying with the same key pays once. Defaults to the executor's key for this step.",
    )


class IssueCompensationResult(BaseModel):
    compensation_id: int
    order_id: str
    customer_id: str
    kind: Literal["coupon", "credit", "refund"]
    amount_cents: int
    currency: str
    reason: str
    idempotency_key: str
    incident_id: str | None
    created_at: datetime
    duplicate: bool  # True: this key had already paid; nothing new was written
    customer_compensations_count: int


@tool(args=IssueCompensationArgs, result=IssueCompensationResult, writes=True, family="compensation")
def issue_compensation(ctx: ToolContext, args: IssueCompensationArgs) -> IssueCompensationResult | ToolError:
    """Pay a compensation for one order: kind coupon, credit (store credit) or refund (money back),
    amount_cents > 0 in the order's currency, with a reason. Idempotent: the same idempotency_key
    (argument, else the executor's step key) pays once; a repeat returns the first payment with
    duplicate=true. Refunds may not exceed the order value minus what was already refunded. Updates
    the customer's compensation count and the order's history. Quote first with quote_compensation."""
    key = args.idempotency_key or ctx.idempotency_key
    if not key:
        return ToolError(
            error="invalid_arguments",
            message="issue_compensation needs an idempotency_key (argument or executor context)",
            details={"field": "idempotency_key"},
        )
    existing = service.find_by_key(session=ctx.session, idempotency_key=key)
    if existing is not None:
        return _check_same(existing, args) or _result(ctx, existing, duplicate=True)
    order = get_order(session=ctx.session, order_id=args.order_id)
    kind = CompensationKind(args.kind)
    if kind == CompensationKind.refund:
        already = service.refunded_cents(session=ctx.session, order_id=order.id)
        if already + args.amount_cents > order.value_cents:
            return ToolError(
                error="refund_exceeds_order_value",
                message=f"refund of {args.amount_cents} cents on order {order.id} would exceed its value "
                f"({order.value_cents} cents, {already} already refunded); offer a credit or coupon instead",
                details={
                    "order_id": order.id,
                    "order_value_cents": order.value_cents,
                    "refunded_cents": already,
                    "requested_cents": args.amount_cents,
                },
            )
    comp, created = service.create_compensation(
        session=ctx.session,
        order=order,
        kind=kind,
        amount_cents=args.amount_cents,
        reason=args.reason,
        idempotency_key=key,
        now=ctx.now,
        actor=ctx.actor,
        incident_id=ctx.incident_id,
    )
    if not created:
        return _check_same(comp, args) or _result(ctx, comp, duplicate=True)
    return _result(ctx, comp, duplicate=False)


def _check_same(comp: Compensation, args: IssueCompensationArgs) -> ToolError | None:
    """A key reused for a different payment is a caller bug: say so rather than pay or hide it."""
    if (comp.order_id, CompensationKind(comp.kind).value, comp.amount_cents) == (
        args.order_id,
        args.kind,
        args.amount_cents,
    ):
        return None
    return ToolError(
        error="idempotency_conflict",
        message=f"idempotency key {comp.idempotency_key!r} already paid a different compensation",
        details={
            "compensation_id": comp.id,
            "order_id": comp.order_id,
            "kind": CompensationKind(comp.kind).value,
            "amount_cents": comp.amount_cents,
        },
    )


def _result(ctx: ToolContext, comp: Compensation, *, duplicate: bool) -> IssueCompensationResult:
    customer = ctx.session.get(Customer, comp.customer_id)
    assert comp.id is not None
    return IssueCompensationResult(
        compensation_id=comp.id,
        order_id=comp.order_id,
        customer_id=comp.customer_id,
        kind=CompensationKind(comp.kind).value,  # type: ignore[arg-type]
        amount_cents=comp.amount_cents,
        currency=comp.currency,
        reason=comp.reason,
        idempotency_key=comp.idempotency_key,
        incident_id=comp.incident_id,
        created_at=aware(comp.created_at),
        duplicate=duplicate,
        customer_compensations_count=customer.compensations_count if customer else 0,
    )

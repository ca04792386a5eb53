"""Tool: replace an order line's SKU with a substitute at the same store.

Pricing rule: the customer never pays more without being asked. The line is charged
``min(original unit price, substitute price)``: a cheaper substitute lowers the order's value (the
difference is the customer's), a dearer one is absorbed by the business. Both differences are returned
and written to the order's history.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import get_sku, release_up_to, reserve
from tools.inventory.stockout import claims_shelf
from tools.models import OrderLine, aware
from tools.orders.service import find_keyed_event, idempotency_key
from tools.service import get_order, record_order_event
from tools.state_machine import Conflict, IllegalTransition, InsufficientStock, NotFound, OrderStatus


class SubstituteItemArgs(ToolArgs):
    order_id: str = Field(min_length=1, max_length=64)
    line_id: int = Field(ge=1, le=2**31 - 1, description="the order line to replace (see get_order)")
    substitute_sku_id: str = Field(min_length=1, max_length=64, description="e.g. from find_substitutes")
    idempotency_key: str | None = Field(default=None, max_length=128, description="same key = substituted once")


class SubstitutionResult(BaseModel):
    order_id: str
    line_id: int
    from_sku_id: str
    to_sku_id: str
    quantity: int
    original_unit_price_cents: int
    substitute_unit_price_cents: int
    customer_unit_price_cents: int = Field(description="what the customer now pays per unit (never more)")
    customer_price_change_cents: int = Field(description="change of the order's value, <= 0")
    absorbed_cents: int = Field(description="extra cost the business absorbs when the substitute is dearer")
    duplicate: bool = Field(description="True when this key was already applied: nothing changed now")


@tool(args=SubstituteItemArgs, result=SubstitutionResult, writes=True, family="inventory")
def substitute_item(ctx: ToolContext, args: SubstituteItemArgs) -> SubstitutionResult | ToolError:
    """Replace an order line (ok or short) with another SKU of the same category at the order's store,
    before the order is picked up: reserves the substitute, gives back the original's reservation and
    marks the line substituted. The customer pays the lower of the two prices, never more. Retrying
    with the same idempotency key substitutes once."""
    s = ctx.session
    order = get_order(session=s, order_id=args.order_id)
    key = idempotency_key(ctx=ctx, explicit=args.idempotency_key, tool="substitute_item", args=args)
    done = find_keyed_event(session=s, order_id=order.id, kind="substitute_item", key=key)
    if done is not None:
        return SubstitutionResult(**{**done.detail["result"], "duplicate": True})
    status = OrderStatus(order.status)
    if not claims_shelf(order, ctx.now):
        raise IllegalTransition(
            f"order {order.id} is {status.value}: lines can only change before picking is done",
            order_id=order.id,
            current=status.value,
        )
    line = s.get(OrderLine, args.line_id)
    if line is None or line.order_id != order.id:
        raise NotFound(f"order {order.id} has no line {args.line_id}", order_id=order.id, line_id=args.line_id)
    if line.status not in ("ok", "short"):
        raise Conflict(f"line {line.id} is {line.status}: only ok or short lines can be substituted", line_id=line.id)
    original = get_sku(session=s, sku_id=line.sku_id)
    sub = get_sku(session=s, sku_id=args.substitute_sku_id)
    if sub.id == original.id or sub.category != original.category:
        return ToolError(
            error="invalid_arguments",
            message=f"{sub.id} cannot replace {original.id}: a substitute is another SKU of the same category",
            details={"original_category": original.category, "substitute_category": sub.category},
        )
    if not reserve(session=s, store_id=order.store_id, sku_id=sub.id, qty=line.quantity):
        raise InsufficientStock(
            f"store {order.store_id} has fewer than {line.quantity} of {sub.id} available",
            store_id=order.store_id,
            sku_id=sub.id,
        )
    if line.status == "ok":
        # a short line already gave its reservation back when the stockout was found
        release_up_to(session=s, store_id=order.store_id, sku_id=original.id, qty=line.quantity)
    paid = line.unit_price_cents
    customer_unit = min(paid, sub.price_cents)
    change = (customer_unit - paid) * line.quantity
    result = SubstitutionResult(
        order_id=order.id,
        line_id=line.id or 0,
        from_sku_id=original.id,
        to_sku_id=sub.id,
        quantity=line.quantity,
        original_unit_price_cents=paid,
        substitute_unit_price_cents=sub.price_cents,
        customer_unit_price_cents=customer_unit,
        customer_price_change_cents=change,
        absorbed_cents=max(0, sub.price_cents - paid) * line.quantity,
        duplicate=False,
    )
    line.substituted_from = original.id
    line.sku_id = sub.id
    line.unit_price_cents = customer_unit
    line.status = "substituted"
    order.value_cents += change
    order.version += 1
    s.add(line)
    s.add(order)
    record_order_event(
        session=s,
        order_id=order.id,
        at=aware(ctx.now),
        kind="substitute_item",
        actor=ctx.actor,
        detail={"idempotency_key": key, "result": result.model_dump(mode="json")},
    )
    s.flush()
    return result

"""Tool: a customer's expected value over the next 12 months (BG/NBD x Gamma-Gamma)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.customers.value import CustomerValue, customer_values, population_model
from tools.models import Tier


class GetCustomerValueArgs(ToolArgs):
    customer_id: str = Field(min_length=1, max_length=64)


class ValueInputs(BaseModel):
    frequency: int = Field(description="repeat purchase days so far (same-day purchases count once)")
    recency_days: float = Field(description="days from the first to the last purchase")
    tenure_days: float = Field(description="days from the first purchase to now (T)")
    avg_order_cents: int = Field(description="mean amount of the repeat purchases; 0 when there are none")
    model_version: str
    model_source: str = Field(description="'world' (fitted on this world's histories) or 'cdnow-reference'")
    parameters: dict[str, Any]


class CustomerValueResult(BaseModel):
    customer_id: str
    tier: Tier = Field(description="value tier: top 5% platinum, next 15% gold, next 30% silver, rest bronze")
    expected_purchases_12m: float
    expected_value_12m_cents: int
    currency: str
    p_alive: float = Field(description="probability the customer has not silently stopped buying")
    repurchase_per_month: float
    expected_order_cents: int = Field(description="expected amount of the next purchase")
    inputs: ValueInputs


@tool(args=GetCustomerValueArgs, result=CustomerValueResult, writes=False, family="customers")
def get_customer_value(ctx: ToolContext, args: GetCustomerValueArgs) -> CustomerValueResult | ToolError:
    """Estimate how much a customer is worth over the next 12 months from their purchase history:
    expected purchases and spend (integer cents), probability they are still an active customer,
    purchases per month, value tier, and the history figures the estimate used. Use it to weigh
    compensation or priority for high-value customers. Read-only."""
    values = customer_values(session=ctx.session, customer_ids=[args.customer_id], now=ctx.now)
    value: CustomerValue | None = values.get(args.customer_id)
    if value is None:
        return ToolError(
            error="not_found",
            message=f"unknown customer {args.customer_id!r}",
            details={"customer_id": args.customer_id},
        )
    model = population_model(session=ctx.session, now=ctx.now)  # cached: the fit customer_values used
    return CustomerValueResult(
        customer_id=value.customer_id,
        tier=value.tier,
        expected_purchases_12m=value.expected_purchases_12m,
        expected_value_12m_cents=value.expected_value_12m_cents,
        currency=value.currency,
        p_alive=value.p_alive,
        repurchase_per_month=value.repurchase_per_month,
        expected_order_cents=value.expected_order_cents,
        inputs=ValueInputs(
            frequency=value.frequency,
            recency_days=value.recency_days,
            tenure_days=value.tenure_days,
            avg_order_cents=value.avg_order_cents,
            model_version=value.model_version,
            model_source=value.model_source,
            parameters=model.parameters(),
        ),
    )

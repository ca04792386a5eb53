"""Tool: quote what to pay customers of delayed orders, with the reasons behind each figure."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.compensation.features import CompensationFeatures, DelaySource, ValueSource, build_features
from tools.compensation.model import Explanation, get_model

MAX_ORDERS = 1000


class QuoteCompensationArgs(ToolArgs):
    order_ids: list[str] = Field(min_length=1, max_length=MAX_ORDERS)
    predicted_delay_minutes: dict[str, float] | None = Field(
        default=None,
        description="Optional forecast delay beyond the promise per order id (minutes; negative = early). "
        "Orders not listed get the ETA estimate.",
    )

    @field_validator("predicted_delay_minutes")
    @classmethod
    def _finite(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for oid, minutes in (v or {}).items():
            if not -1440.0 <= minutes <= 1440.0:
                raise ValueError(f"delay for {oid!r} must be within +-1440 minutes")
        return v


class OrderQuote(BaseModel):
    order_id: str
    customer_id: str
    kind: Literal["coupon", "credit", "refund", "none"]
    amount_cents: int
    currency: str
    explanation: Explanation
    model_version: str
    features: CompensationFeatures
    delay_source: DelaySource
    value_source: ValueSource


class QuoteError(BaseModel):
    order_id: str
    error: str
    message: str


class QuoteCompensationResult(BaseModel):
    quotes: list[OrderQuote]
    errors: list[QuoteError]
    model_version: str
    total_cents: int


@tool(args=QuoteCompensationArgs, result=QuoteCompensationResult, writes=False, family="compensation")
def quote_compensation(ctx: ToolContext, args: QuoteCompensationArgs) -> QuoteCompensationResult | ToolError:
    """Quote a goodwill compensation for each delayed order (read-only, pays nothing). For every order
    returns kind (coupon, credit, refund, or none when nothing is owed), amount_cents on a 50-cent grid
    (at most 5000; a refund at most the order value), currency, and an explanation: the model's base
    value, its prediction, each feature's SHAP value and the top factors as shares of the total
    attribution (e.g. "predicted delay +54%"). Features: predicted delay beyond the promise (pass
    predicted_delay_minutes from a reassignment forecast, else estimated from the order's ETA), order
    value, customer 12-month value, tier, repurchase frequency, past complaints, compensations and
    refund claims, weather, channel. Unknown order ids are listed in errors; the others are still
    quoted. Issue a quote with issue_compensation."""
    found, missing = build_features(
        session=ctx.session,
        order_ids=args.order_ids,
        now=ctx.now,
        predicted_delay_minutes=args.predicted_delay_minutes,
    )
    model = get_model()
    rows = list(found.values())
    quotes = model.quote([r.features for r in rows])
    # the whole result in one validation call in pydantic-core; the quotes' models pass as they are
    return QuoteCompensationResult.model_validate(
        {
            "quotes": [
                {
                    "order_id": r.order_id,
                    "customer_id": r.customer_id,
                    "kind": q.kind,
                    "amount_cents": q.amount_cents,
                    "currency": r.currency,
                    "explanation": q.explanation,
                    "model_version": q.model_version,
                    "features": r.features,
                    "delay_source": r.delay_source,
                    "value_source": r.value_source,
                }
                for r, q in zip(rows, quotes, strict=True)
            ],
            "errors": [{"order_id": oid, "error": "not_found", "message": msg} for oid, msg in missing.items()],
            "model_version": model.version,
            "total_cents": sum(q.amount_cents for q in quotes),
        }
    )

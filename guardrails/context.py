"""What ``assess`` may know about the world: plain facts gathered beforehand, never a database handle.

Keeping the context as data makes the policy a pure function: the same step and the same facts always
give the same verdict, in tests, in evals and in production. Customer free text is deliberately absent:
nothing a customer writes can reach the policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Autonomy = Literal["shadow", "assist", "auto"]


class OrderFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value_cents: int = 0
    status: str
    customer_id: str = ""
    customer_tier: str = "bronze"
    customer_value_cents: int | None = None  # expected 12-month value, when the LTV model is available
    refund_claims: int = 0
    rider_id: str | None = None  # the rider currently carrying the order, if any
    # money already committed on this order: compensation paid (any incident) plus steps waiting in,
    # or approved in, an open approval request; the per-order limits count it with the step's amount
    compensated_cents: int = 0


class RiderFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str  # idle | busy | offline | off_shift
    shift_end: datetime
    load: int = 0  # active orders currently assigned
    capacity: int = 3


class AssessContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    incident_order_ids: list[str] = []
    orders: dict[str, OrderFacts] = {}
    riders: dict[str, RiderFacts] = {}
    incident_spent_cents: int = 0  # money already committed in this incident (issued or approved)
    autonomy: Autonomy = "auto"
    now: datetime
    # tool names that exist in the registry; None = trust the policy's tool list alone
    registered_tools: list[str] | None = Field(default=None)

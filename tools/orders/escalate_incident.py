"""Tool: hand an incident to a human team, once per key."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.models import Order, aware
from tools.orders.service import idempotency_key, record_escalation, require_ids


class EscalateIncidentArgs(ToolArgs):
    reason: str = Field(min_length=1, max_length=1000, description="what the team must look at and why")
    team: Literal["ops", "support", "store", "fleet", "safety"] = "ops"
    order_ids: list[str] = Field(default_factory=list, max_length=500, description="orders concerned")
    idempotency_key: str | None = Field(default=None, max_length=128, description="same key = one escalation")


class EscalationResult(BaseModel):
    escalation_id: int
    incident_id: str | None
    team: str
    order_ids: list[str]
    idempotency_key: str
    duplicate: bool = Field(description="True when this key was already escalated: nothing new was created")
    created_at: datetime


@tool(args=EscalateIncidentArgs, result=EscalationResult, writes=True, family="orders")
def escalate_incident(ctx: ToolContext, args: EscalateIncidentArgs) -> EscalationResult | ToolError:
    """Escalate the current incident to a human team (ops, support, store, fleet, safety) with a reason
    and the orders concerned, when the agent cannot or should not resolve it itself. The same
    idempotency key creates one escalation only."""
    order_ids = sorted(set(args.order_ids))
    require_ids(session=ctx.session, model=Order, ids=order_ids, what="orders")
    key = idempotency_key(ctx=ctx, explicit=args.idempotency_key, tool="escalate_incident", args=args)
    row, created = record_escalation(
        session=ctx.session,
        incident_id=ctx.incident_id,
        order_ids=order_ids,
        reason=args.reason,
        team=args.team,
        key=key,
        now=aware(ctx.now),
    )
    return EscalationResult(
        escalation_id=row.id or 0,
        incident_id=row.incident_id,
        team=row.team,
        order_ids=list(row.order_ids or []),
        idempotency_key=key,
        duplicate=not created,
        created_at=aware(row.created_at),
    )

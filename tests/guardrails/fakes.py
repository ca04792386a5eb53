"""Tools with the same argument shapes as the real ones, so guardrail tests do not depend on every
tool module of the registry being in place."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tools.base import Tool, ToolArgs, ToolContext, tool


class Done(BaseModel):
    ok: bool = True


class OrderRef(ToolArgs):
    order_id: str = Field(min_length=1)


class IssueCompensationArgs(ToolArgs):
    order_id: str = Field(min_length=1)
    kind: Literal["coupon", "credit", "refund"]
    amount_cents: int = Field(gt=0, le=100_000)
    reason: str = Field(min_length=1)


class CancelOrderArgs(ToolArgs):
    order_id: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class NotifyCustomerArgs(ToolArgs):
    order_id: str = Field(min_length=1)
    template: Literal["delay", "refund", "cancellation"]
    amount_cents: int | None = None


class AssignmentIn(ToolArgs):
    order_id: str
    rider_id: str


class ApplyReassignmentArgs(ToolArgs):
    assignments: list[AssignmentIn] = Field(min_length=1)


class EscalateIncidentArgs(ToolArgs):
    reason: str = Field(min_length=1)
    order_ids: list[str] = []


def _tool(name: str, args: type[ToolArgs], writes: bool) -> Tool[Any, Any]:
    def fn(ctx: ToolContext, a: Any) -> Done:
        return Done()

    fn.__name__ = name
    fn.__doc__ = f"Fake {name} for guardrail tests."
    return tool(args=args, result=Done, writes=writes)(fn)


FAKE_TOOLS: dict[str, Tool[Any, Any]] = {
    t.name: t
    for t in (
        _tool("get_order", OrderRef, False),
        _tool("issue_compensation", IssueCompensationArgs, True),
        _tool("cancel_order", CancelOrderArgs, True),
        _tool("notify_customer", NotifyCustomerArgs, True),
        _tool("apply_reassignment", ApplyReassignmentArgs, True),
        _tool("hold_order", OrderRef, True),
        _tool("escalate_incident", EscalateIncidentArgs, True),
    )
}

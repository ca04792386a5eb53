"""The one interface every planner implements, and the data it is given.

A planner never touches the database or executes anything: it reads the incident, the
investigation snapshot and (for the LLM planner) may call READ tools through ``ctx.read_tool``.
What it returns is a proposal; guardrails assess it and the executor decides what runs.

How confidences are computed (shared by all planners, see ``plan_confidence``):
- a step's confidence is the planner's estimate that the step achieves its expected effect:
  reassignment = the share of the step's orders the solver predicts on time after the move;
  compensation = the compensation model's fit quality for the amount (its R^2 on held-out data, as
  reported by quote_compensation, else a documented prior); notifications = a fixed prior (0.95:
  a message is almost always delivered and harmless); inventory moves = priors by tool.
- a plan's confidence is the MINIMUM over its write steps: the plan is only as trustworthy as its
  weakest action, and a mean would let many certain notifications hide one doubtful reassignment.
  An empty plan has confidence 1.0 (nothing can go wrong by doing nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from agent.plan import Plan, PlanStep
from agent.settings import Settings

# documented priors where no model gives a number
PRIOR_NOTIFY = 0.95
PRIOR_ESCALATE = 0.95
PRIOR_SUBSTITUTE = 0.85
PRIOR_TRANSFER = 0.8
PRIOR_EXPEDITE = 0.7
# handing a picked-up bag to the nearest idle rider: no forecast covers the meeting point, so a prior
# equal to a substitution's (a routine, reversible dispatch move with a known rider and position)
PRIOR_HANDOVER = 0.85
# when the quote carries no fit quality: the model is trained on a policy-labelled history and
# checked against it by its own tests, so its amounts are trusted like a written policy table
PRIOR_COMPENSATION = 0.9
PRIOR_REFUND = 0.9  # a partial refund of a missing item's price: the amount is the price


class IncidentBrief(BaseModel):
    """What a planner knows about the incident (a plain copy of the row, no database handle)."""

    id: str
    type: str
    family: str
    zone: str = ""
    order_ids: list[str] = []
    rider_ids: list[str] = []
    store_ids: list[str] = []
    customer_ids: list[str] = []
    payloads: list[dict[str, Any]] = []
    opened_at: datetime | None = None
    # a follow-up run (late events): plan for ``order_ids`` only, earlier plans covered the rest
    follow_up: bool = False
    # events of another family that joined (by an order) and ask for what only their own playbook
    # does (agent.incidents.needs_own_playbook): one brief of that family each, investigated and
    # planned beside the incident's own
    also: list[IncidentBrief] = []


ReadTool = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class PlanContext:
    now: datetime
    settings: Settings
    read_tool: ReadTool  # runs a READ tool; refuses write tools
    autonomy: str = "auto"
    tool_names: Mapping[str, bool] = field(default_factory=dict)  # name -> writes
    # extra outputs a planner gathered (LLM tool calls) to append to the snapshot record
    gathered: list[dict[str, Any]] = field(default_factory=list)


class Planner(Protocol):
    name: str

    def plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> Plan: ...


def plan_confidence(steps: list[PlanStep], tool_writes: Mapping[str, bool] | None = None) -> float:
    """Minimum step confidence over write steps (all steps when write flags are unknown); 1.0 if none."""
    relevant = [s for s in steps if tool_writes is None or tool_writes.get(s.tool, True)]
    return round(min((s.confidence for s in relevant), default=1.0), 4)


def renumber(steps: list[PlanStep]) -> list[PlanStep]:
    """The steps with their positions as indexes, set in place: the steps are the planner's own, just
    built for this plan (a copy of each of a storm's ~400 cost more than the rest of the playbook)."""
    for i, s in enumerate(steps):
        if s.index != i:
            s.index = i
    return steps

"""The do-nothing baseline for evals: what happens to an incident when nobody acts."""

from __future__ import annotations

from typing import Any

from agent.plan import Plan
from agent.planners.base import IncidentBrief, PlanContext


class NoopPlanner:
    name = "noop"

    def plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> Plan:
        return Plan(
            incident_id=incident.id,
            planner=self.name,
            steps=[],
            confidence=1.0,
            summary="baseline: no action",
            model_name="noop",
        )

"""Planners: from an incident and its investigation snapshot to a Plan (see base.Planner)."""

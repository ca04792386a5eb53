"""Argument and result schemas of the riders tools (plain pydantic: what the model sees)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from tools.base import ToolArgs

Id = Field(min_length=1, max_length=64)


class FindAvailableRidersArgs(ToolArgs):
    x: float | None = Field(default=None, ge=-1e7, le=1e7, description="point x in metres")
    y: float | None = Field(default=None, ge=-1e7, le=1e7, description="point y in metres")
    zone: str | None = Field(default=None, min_length=1, max_length=64)
    radius_m: float = Field(default=3000.0, gt=0, le=100_000, description="search radius around the point")
    include_busy: bool = Field(default=True, description="include riders still finishing a route")
    limit: int = Field(default=20, ge=1, le=200)

    @model_validator(mode="after")
    def _where(self) -> FindAvailableRidersArgs:
        if (self.x is None) != (self.y is None):
            raise ValueError("give both x and y, or neither")
        if self.x is None and self.zone is None:
            raise ValueError("give a point (x, y) or a zone")
        return self


class AvailableRider(BaseModel):
    rider_id: str
    status: str
    zone: str
    load: int
    capacity: int
    free_at: datetime
    shift_end: datetime
    distance_m: float | None
    eta_minutes: float | None  # from now until it can reach the point (after its current route)


class FindAvailableRidersResult(BaseModel):
    ok: bool = True
    riders: list[AvailableRider]
    speed_factor: float
    considered: int


class PlanReassignmentArgs(ToolArgs):
    order_ids: list[str] = Field(default_factory=list, max_length=500)
    zone: str | None = Field(default=None, min_length=1, max_length=64)
    rider_ids: list[str] | None = Field(default=None, max_length=500)
    exact_time_limit_s: float = Field(
        default=2.0, ge=0, le=30, description="seconds for the exact check (0 = skip the bound)"
    )

    @model_validator(mode="after")
    def _what(self) -> PlanReassignmentArgs:
        if not self.order_ids and self.zone is None:
            raise ValueError("give order_ids or a zone")
        return self


class PlannedAssignment(BaseModel):
    order_id: str
    rider_id: str
    current_rider_id: str | None
    bundle: list[str]
    pickup_at: datetime
    dropoff_at: datetime
    promised_at: datetime
    pickup_in_minutes: float
    dropoff_in_minutes: float
    lateness_minutes: float
    on_time: bool


class UnassignedOrder(BaseModel):
    order_id: str
    reason: str
    detail: str


class PlanReassignmentResult(BaseModel):
    ok: bool = True
    assignments: list[PlannedAssignment]
    unassigned: list[UnassignedOrder]
    objective: float
    lateness_minutes: float
    lower_bound: float | None
    gap_pct: float | None
    proven_optimal: bool | None
    solve_ms: float
    speed_factor: float
    riders_considered: int


class AssignmentIn(ToolArgs):
    order_id: str = Id
    rider_id: str = Id


class ApplyReassignmentArgs(ToolArgs):
    assignments: list[AssignmentIn] = Field(min_length=1, max_length=200)


class AppliedAssignment(BaseModel):
    order_id: str
    rider_id: str
    previous_rider_id: str | None
    from_status: str
    to_status: str


class ApplyReassignmentResult(BaseModel):
    ok: bool = True
    applied: list[AppliedAssignment]
    rider_loads: dict[str, int]

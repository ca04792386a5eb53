"""Approval queue tables: a request per plan awaiting supervisors, one row per step, and the
append-only log of every decision taken on a step."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from audit.models import utc_column


class RequestStatus(StrEnum):
    pending = "pending"
    resolved = "resolved"  # every step approved or rejected
    expired = "expired"  # the window closed: pending steps got their safe default


class ApprovalStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    expired = "expired"


class DecisionKind(StrEnum):
    approve = "approve"
    edit = "edit"
    reject = "reject"


class ApprovalRequestBase(SQLModel):
    incident_id: str = Field(index=True)
    thread_id: str = ""
    status: RequestStatus = Field(default=RequestStatus.pending, index=True)
    required_approvals: int = 1  # the highest tier among the steps
    confidence: float = 1.0
    policy_version: str = ""
    escalated: bool = False


class ApprovalRequest(ApprovalRequestBase, table=True):
    id: str = Field(primary_key=True)
    requested_at: datetime = utc_column()
    expires_at: datetime = utc_column(index=True)
    resolved_at: datetime | None = utc_column(nullable=True)
    risk_reasons: list = Field(default_factory=list, sa_column=Column(JSON))
    explanation: dict = Field(default_factory=dict, sa_column=Column(JSON))
    # the incident's order scope, so an edit is re-assessed against the same boundary
    incident_order_ids: list = Field(default_factory=list, sa_column=Column(JSON))
    version: int = 0  # bumped on every status change (optimistic concurrency)


class ApprovalStep(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("request_id", "step_index"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(foreign_key="approvalrequest.id", index=True)
    step_index: int
    tool: str
    args: dict = Field(default_factory=dict, sa_column=Column(JSON))
    args_hash: str
    original_args: dict = Field(default_factory=dict, sa_column=Column(JSON))
    plan_step: dict = Field(default_factory=dict, sa_column=Column(JSON))  # the PlanStep as proposed
    reasons: list = Field(default_factory=list, sa_column=Column(JSON))
    confidence: float = 1.0
    explanation: dict | None = Field(default=None, sa_column=Column(JSON))
    approvals_required: int = 1
    status: ApprovalStatus = Field(default=ApprovalStatus.pending)
    approvals: list = Field(default_factory=list, sa_column=Column(JSON))  # distinct approver ids
    edited: bool = False
    decided_at: datetime | None = utc_column(nullable=True)
    outcome: str = ""  # approved | rejected | the tool's safe default on expiry
    version: int = 0  # bumped on every decision: a decision applies only to the version it read


class ApprovalDecision(SQLModel, table=True):
    """Append-only: one row per supervisor per step, never updated."""

    __table_args__ = (UniqueConstraint("request_id", "step_index", "actor_id"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(foreign_key="approvalrequest.id", index=True)
    step_index: int
    decision: DecisionKind
    edited_args: dict | None = Field(default=None, sa_column=Column(JSON))
    reason: str = ""
    actor_id: str
    actor_role: str
    decided_at: datetime = utc_column()


class DecisionResult(BaseModel):
    """What ``decide_step`` returns to the caller (graph, API)."""

    request_id: str
    step_index: int
    decision: DecisionKind
    step_status: ApprovalStatus
    approvals: list[str]
    approvals_required: int
    args: dict[str, Any]
    edited: bool
    request_status: RequestStatus
    request_resolved: bool
    reasons: list[dict[str, Any]] = []  # the verdict reasons of the (possibly edited) step


class ApprovalStepPublic(BaseModel):
    step_index: int
    tool: str
    args: dict[str, Any]
    original_args: dict[str, Any]
    rationale: str = ""
    reasons: list[dict[str, Any]]
    confidence: float
    explanation: dict[str, Any] | None
    approvals_required: int
    approvals: list[str]
    status: ApprovalStatus
    edited: bool
    outcome: str


class ApprovalRequestPublic(BaseModel):
    id: str
    incident_id: str
    thread_id: str
    status: RequestStatus
    requested_at: datetime
    expires_at: datetime
    required_approvals: int
    confidence: float
    policy_version: str
    escalated: bool
    risk_reasons: list[dict[str, Any]]
    steps: list[ApprovalStepPublic]

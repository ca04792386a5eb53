"""Tables of the agent: incidents, the events that opened or joined them, and executed plan steps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from tools.models import ts_column


class IncidentStatus(StrEnum):
    open = "open"
    investigating = "investigating"
    awaiting_approval = "awaiting_approval"
    executing = "executing"
    resolved = "resolved"
    failed = "failed"
    escalated = "escalated"


# an event may still join an incident in these states; later ones open a new incident
OPEN_STATUSES = frozenset(
    {
        IncidentStatus.open,
        IncidentStatus.investigating,
        IncidentStatus.awaiting_approval,
        IncidentStatus.executing,
    }
)


class IncidentBase(SQLModel):
    type: str  # the ExceptionType of the event that opened it
    family: str = Field(index=True)  # correlation family (see agent.incidents.FAMILIES)
    zone: str = Field(default="", index=True)
    status: IncidentStatus = Field(default=IncidentStatus.open, index=True)
    planner: str = ""
    autonomy: str = ""
    summary: str = ""


class Incident(IncidentBase, table=True):
    id: str = Field(primary_key=True)
    thread_id: str  # the LangGraph thread: equal to the incident id (one thread per incident)
    opened_at: datetime = ts_column()
    updated_at: datetime = ts_column()
    last_event_at: datetime = ts_column()  # the correlation window runs from here
    # the events themselves are IncidentEvent rows (ordered by ``seq``): a storm can bring thousands,
    # and the row, read and rewritten by every intake and every node, keeps only their number
    event_count: int = 0
    order_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    rider_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    store_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    customer_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    # the latest plan, its verdicts and each step's status: what the service shows
    plan: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    verdicts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    step_status: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    snapshot_sha: str = ""
    request_id: str | None = None


class IncidentPublic(IncidentBase):
    id: str
    thread_id: str
    opened_at: datetime
    updated_at: datetime
    event_count: int
    order_ids: list[str]
    plan: dict[str, Any] | None
    verdicts: dict[str, Any]
    step_status: dict[str, str]
    request_id: str | None


class IncidentEvent(SQLModel, table=True):
    """One accepted event. The primary key on the event id makes ingestion idempotent, even under races."""

    event_id: str = Field(primary_key=True, max_length=128)
    incident_id: str = Field(index=True)
    seq: int = 0  # its position among the incident's events (0 = the one that opened it)
    type: str
    received_at: datetime = ts_column()
    occurred_at: datetime = ts_column()
    event: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # as received, for replay


class ExecutionStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class ExecutedStep(SQLModel, table=True):
    """A write step that ran (or is running) under its idempotency key: the key is never run twice."""

    idempotency_key: str = Field(primary_key=True, max_length=64)
    incident_id: str = Field(index=True)
    step_index: int
    tool: str
    args_hash: str
    status: ExecutionStatus = ExecutionStatus.running
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    error: str = ""
    actor: str = "agent"
    approved_by: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    started_at: datetime = ts_column()
    finished_at: datetime | None = ts_column(nullable=True)

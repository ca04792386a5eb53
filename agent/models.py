"""Tables of the agent: incidents, the events that opened or joined them, and executed plan steps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import JSON, Column, Index, bindparam, inspect, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import defer
from sqlmodel import Field, SQLModel

from tools.db import SCHEMA_UPGRADES, add_column, column_names
from tools.models import UtcDatetime, ts_column


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

# a run is under way in these (or was cut short there: the process stopped between intake and the end)
UNFINISHED_STATUSES = (IncidentStatus.open, IncidentStatus.investigating, IncidentStatus.executing)


class IncidentBase(SQLModel):
    type: str  # the ExceptionType of the event that opened it
    family: str = Field(index=True)  # correlation family (see agent.incidents.FAMILIES)
    zone: str = Field(default="", index=True)
    status: IncidentStatus = Field(default=IncidentStatus.open, index=True)
    planner: str = ""
    autonomy: str = ""
    summary: str = ""


# the incidents whose events were not all checked by a follow-up check: a handful at any time (the
# worker's recovery looks for them every few seconds), so a partial index keeps that look-up small
_UNCHECKED_SQL = "event_count > checked_events"
_UNCHECKED = text(_UNCHECKED_SQL)


class Incident(IncidentBase, table=True):
    __table_args__ = (Index("ix_incident_unchecked", "status", sqlite_where=_UNCHECKED, postgresql_where=_UNCHECKED),)

    id: str = Field(primary_key=True)
    thread_id: str  # the LangGraph thread: equal to the incident id (one thread per incident)
    opened_at: datetime = ts_column()
    updated_at: datetime = ts_column()
    last_event_at: datetime = ts_column()  # the correlation window runs from here
    # the events themselves are IncidentEvent rows (ordered by ``seq``): a storm can bring thousands,
    # and the row, read and rewritten by every intake and every node, keeps only their number
    event_count: int = 0
    # how many of them the last follow-up check after a run had seen (agent.runtime._follow_up): an
    # incident that ended with more events than that took one in after its last check
    checked_events: int = 0
    order_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    rider_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    store_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    customer_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    # the latest plan, its verdicts and each step's status: what the service shows
    plan: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    verdicts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    step_status: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    snapshot_sha: str = ""
    plan_sha: str = ""  # agent.reads.plan_digest of ``plan``: a node checks its thread's plan by this
    request_id: str | None = None


# loader options for the many readers of an incident that do not read its plan and verdicts (a storm's
# are ~0.5 MB of JSON): they are loaded when first touched instead
WITHOUT_PLAN = (defer(Incident.plan), defer(Incident.verdicts))  # type: ignore[arg-type]


class IncidentPublic(IncidentBase):
    id: str
    thread_id: str
    opened_at: UtcDatetime
    updated_at: UtcDatetime
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


class RunLease(SQLModel, table=True):
    """Which process runs an incident's graph now, until when (see agent.lease). Epoch seconds of the
    database's clock, never a simulation's: a lease does not outlive its holder's renewals."""

    incident_id: str = Field(primary_key=True)
    holder: str
    acquired_at: float
    expires_at: float


def _upgrade_incident_events(conn: Connection) -> None:
    """A database made before incidents kept their events as IncidentEvent rows only (the incident
    row held the lists ``event_ids`` and ``payloads``, now unused): adds ``incident.event_count``,
    ``incident.plan_sha`` and ``incidentevent.seq``, and fills the count and the positions from
    ``event_ids``. A plan stored before ``plan_sha`` is checked by its digest instead (agent.reads)."""
    if "incident" not in inspect(conn).get_table_names():
        return
    had_lists = "event_ids" in column_names(conn, "incident")
    added = add_column(conn, "incident", "event_count", "INTEGER NOT NULL DEFAULT 0")
    add_column(conn, "incident", "plan_sha", "VARCHAR NOT NULL DEFAULT ''")
    added = add_column(conn, "incidentevent", "seq", "INTEGER NOT NULL DEFAULT 0") or added
    if not (had_lists and added):
        return
    incidents = Incident.__table__  # type: ignore[attr-defined]
    events = IncidentEvent.__table__  # type: ignore[attr-defined]
    for incident_id, raw in conn.execute(text("SELECT id, event_ids FROM incident")).all():
        ids: list[str] = orjson.loads(raw) if isinstance(raw, str | bytes) else list(raw or [])  # type: ignore[call-overload]
        conn.execute(update(incidents).where(incidents.c.id == incident_id).values(event_count=len(ids)))
        if ids:
            conn.execute(
                update(events).where(events.c.event_id == bindparam("eid")).values(seq=bindparam("pos")),
                [{"eid": eid, "pos": pos} for pos, eid in enumerate(ids)],
            )


def _upgrade_checked_events(conn: Connection) -> None:
    """A database made before ``incident.checked_events``: every incident counts as checked (what
    earlier versions left behind is not re-examined)."""
    if "incident" not in inspect(conn).get_table_names():
        return
    if add_column(conn, "incident", "checked_events", "INTEGER NOT NULL DEFAULT 0"):
        conn.execute(text("UPDATE incident SET checked_events = event_count"))
    # looked up first: on PostgreSQL even a CREATE INDEX IF NOT EXISTS locks the table against writes
    if "ix_incident_unchecked" not in {ix["name"] for ix in inspect(conn).get_indexes("incident")}:
        conn.execute(text(f"CREATE INDEX ix_incident_unchecked ON incident (status) WHERE {_UNCHECKED_SQL}"))


SCHEMA_UPGRADES.extend([_upgrade_incident_events, _upgrade_checked_events])

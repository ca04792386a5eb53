"""Incidents: the list (filterable) and one incident with its plan, step states and audit timeline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime

from agent.api import service
from agent.api.deps import AUTH_RESPONSES, ReaderDep, SessionDep
from agent.models import Incident, IncidentPublic, IncidentStatus

router = APIRouter(prefix="/incidents", tags=["incidents"], responses=AUTH_RESPONSES)


@router.get("", response_model=list[IncidentPublic])
def list_incidents(
    session: SessionDep,
    _: ReaderDep,
    status: IncidentStatus | None = None,
    type: str | None = Query(default=None, max_length=64),
    zone: str | None = Query(default=None, max_length=64),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[Any]:
    """Incidents, newest first; filter by status, exception type, zone and opening time."""
    return service.query_incidents(
        session=session,
        status=status.value if status else None,
        type=type,
        zone=zone,
        since=since,
        until=until,
        limit=limit,
    )


@router.get("/{incident_id}")
def get_incident(incident_id: str, session: SessionDep, _: ReaderDep) -> dict[str, Any]:
    """One incident: its plan, each step's verdict and state, executions and the audit timeline."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise HTTPException(404, detail=f"unknown incident {incident_id!r}")
    return service.incident_detail(session=session, incident=incident)

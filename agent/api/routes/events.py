"""Intake: order systems post exception events; the agent works on them in the background."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, status
from pydantic import Field
from sqlalchemy.exc import OperationalError

from agent.api.deps import AUTH_RESPONSES, IntegrationDep, WorkerDep
from agent.api.models import EventAccepted, EventsAccepted
from agent.api.worker import IntakeTimeout
from tools.events import ExceptionEvent

router = APIRouter(tags=["events"], responses=AUTH_RESPONSES)

MAX_EVENTS_PER_REQUEST = 1000
EventBatch = Annotated[list[ExceptionEvent], Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventsAccepted,
    responses={
        413: {"description": "body too large"},
        503: {"description": "agent runtime unavailable, or the database too busy to commit in time (repeat it)"},
    },
)
async def post_events(
    worker: WorkerDep,
    _: IntegrationDep,
    body: Annotated[ExceptionEvent | EventBatch, Body()],
) -> EventsAccepted:
    """Accept one exception event or a list. Idempotent by event id: a repeated id has one effect.

    Answers 202 with the incident each event joined; the incident runs on a background worker.
    """
    events = body if isinstance(body, list) else [body]
    if worker.runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="the agent runtime is not available")
    try:
        results = await worker.submit_async(events, timeout_s=worker.settings.intake_timeout_s)
    except IntakeTimeout as exc:
        # the events may still be stored: posting them again is safe (each id has one effect)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc), headers={"Retry-After": "1"}) from exc
    except OperationalError as exc:
        # the database gave up first (locked past its own busy timeout): nothing was stored; the
        # client repeats, as after a timeout
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the database is too busy to store the events now: repeat the request",
            headers={"Retry-After": "1"},
        ) from exc
    out = [
        EventAccepted(
            event_id=r.event_id, incident_id=r.incident_id, duplicate=r.duplicate, new_incident=r.new_incident
        )
        for r in results
    ]
    return EventsAccepted(
        accepted=sum(not r.duplicate for r in out),
        duplicates=sum(r.duplicate for r in out),
        incident_ids=list(dict.fromkeys(r.incident_id for r in out)),
        results=out,
    )

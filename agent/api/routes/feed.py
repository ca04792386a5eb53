"""A live feed for the console: incident and approval-queue changes as server-sent events."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from agent.api import approval_views, service
from agent.api.deps import AUTH_RESPONSES, ROUTE_ROLES, ReaderDep, principal_for
from agent.api.models import Role
from agent.models import IncidentPublic

router = APIRouter(tags=["feed"], responses=AUTH_RESPONSES)


def snapshot(engine: object) -> dict[str, object]:
    with Session(engine, expire_on_commit=False) as session:  # type: ignore[arg-type]
        incidents = service.query_incidents(session=session, limit=50)
        pending = approval_views.list_views(session=session, status="pending", incident_id=None, limit=200)
    return {
        "incidents": [
            IncidentPublic.model_validate(i, from_attributes=True).model_dump(mode="json") for i in incidents
        ],
        "approvals_pending": len(pending),
        "approval_ids": [p["id"] for p in pending],
    }


@router.get(
    "/feed",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`state` events on every change"}},
)
async def feed(
    request: Request,
    _: ReaderDep,
    interval_s: float = Query(default=2.0, ge=0.2, le=30.0),
    max_events: int = Query(default=0, ge=0, le=100000, description="stop after this many events (0 = never)"),
) -> StreamingResponse:
    """Sends a `state` event (recent incidents, pending approvals) whenever it changes, polling the
    database. The token is checked again as the stream goes on: a revoked one ends it."""
    engine = request.app.state.engine
    secret = request.headers.get("authorization", "").partition(" ")[2].strip()
    readers = {*ROUTE_ROLES["read"], Role.admin}

    async def stream() -> AsyncIterator[str]:
        last = ""
        sent = 0
        while True:
            who = await principal_for(request, secret)
            if who is None or who.role not in readers:
                yield "event: revoked\ndata: {}\n\n"
                return
            state = await asyncio.to_thread(snapshot, engine)
            digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()
            if digest != last:
                last = digest
                sent += 1
                yield f"event: state\ndata: {json.dumps(state, default=str)}\n\n"
                if max_events and sent >= max_events:
                    return
            else:
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(interval_s)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

"""A read-only JSON view of the operational world."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from agent.api import service
from agent.api.deps import AUTH_RESPONSES, ReaderDep, SessionDep
from tools.state_machine import NotFound
from tools.world.service import world_summary

router = APIRouter(prefix="/world", tags=["world"], responses=AUTH_RESPONSES)


@router.get("")
def get_world_summary(session: SessionDep, _: ReaderDep) -> dict[str, Any]:
    """Counts by entity and status and the world's clock."""
    try:
        return world_summary(session=session)
    except NotFound as exc:
        raise HTTPException(404, detail=exc.message) from exc


@router.get("/orders/{order_id}")
def get_world_order(order_id: str, session: SessionDep, _: ReaderDep) -> dict[str, Any]:
    """One order with its lines, history, rider and compensations."""
    view = service.order_view(session=session, order_id=order_id)
    if view is None:
        raise HTTPException(404, detail=f"unknown order {order_id!r}")
    return view

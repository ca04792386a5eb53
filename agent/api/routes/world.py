"""A read-only JSON view of the operational world."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy import func
from sqlmodel import select

from agent.api.deps import ReaderDep, SessionDep
from tools import service as world
from tools.models import Compensation, Order, OrderEvent, OrderLine, Rider
from tools.state_machine import NotFound

router = APIRouter(prefix="/world", tags=["world"])


def _summary(session: Any) -> dict[str, Any]:
    try:
        from tools.world.service import world_summary
    except ModuleNotFoundError:
        world_summary = None
    if world_summary is not None:
        return world_summary(session=session)
    info = world.get_world(session=session)
    orders = session.exec(select(Order.status, func.count()).group_by(Order.status)).all()
    riders = session.exec(select(Rider.status, func.count()).group_by(Rider.status)).all()
    return {
        "name": info.name,
        "now": info.now.isoformat() if info.now else None,
        "orders": {str(s): n for s, n in orders},
        "riders": {str(s): n for s, n in riders},
    }


@router.get("")
def get_world_summary(session: SessionDep, _: ReaderDep) -> dict[str, Any]:
    """Counts by entity and status and the world's clock."""
    try:
        return _summary(session)
    except NotFound as exc:
        raise HTTPException(404, detail=exc.message) from exc


@router.get("/orders/{order_id}")
def get_world_order(order_id: str, session: SessionDep, _: ReaderDep) -> dict[str, Any]:
    """One order with its lines, history, rider and compensations."""
    order = session.get(Order, order_id)
    if order is None:
        raise HTTPException(404, detail=f"unknown order {order_id!r}")
    lines = session.exec(select(OrderLine).where(OrderLine.order_id == order_id)).all()
    history = session.exec(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)  # type: ignore[arg-type]
    ).all()
    comps = session.exec(select(Compensation).where(Compensation.order_id == order_id)).all()
    return {
        "order": order.model_dump(mode="json"),
        "lines": [line.model_dump(mode="json") for line in lines],
        "history": [ev.model_dump(mode="json") for ev in history],
        "compensations": [c.model_dump(mode="json") for c in comps],
        "rider": session.get(Rider, order.rider_id).model_dump(mode="json") if order.rider_id else None,
    }

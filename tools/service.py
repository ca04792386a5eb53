"""Database functions of the operational world shared by tools, simulator and agent.

Keyword-only and typed; routes, tools and graph nodes call these and never write SQL inline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from tools.models import Customer, Order, OrderEvent, Rider, Store, WorldInfo, aware
from tools.state_machine import NotFound, OrderStatus, check_transition

# session.info key of the session's WorldInfo: the session holds the row object for as long as it lives
_WORLD_REF = "orderagent.world"


def get_world(*, session: Session) -> WorldInfo:
    """The world row. The session keeps a reference to it: its identity map holds objects weakly, and a
    tool's call reads the world four or five times in one session (one SELECT each, ~0.3 ms, while
    nothing else held it). A commit expires it as any object, and the next read refreshes it."""
    world = session.get(WorldInfo, 1)
    if world is None:
        raise NotFound("no world is loaded: run `orderagent world generate` or `world load-mdrp`")
    session.info[_WORLD_REF] = world
    return world


def world_now(*, session: Session) -> datetime:
    return aware(get_world(session=session).now)


def set_world_now(*, session: Session, now: datetime) -> None:
    world = get_world(session=session)
    world.now = now
    session.add(world)


def get_order(*, session: Session, order_id: str) -> Order:
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound(f"unknown order {order_id!r}", order_id=order_id)
    return order


def get_rider(*, session: Session, rider_id: str) -> Rider:
    rider = session.get(Rider, rider_id)
    if rider is None:
        raise NotFound(f"unknown rider {rider_id!r}", rider_id=rider_id)
    return rider


def get_store(*, session: Session, store_id: str) -> Store:
    store = session.get(Store, store_id)
    if store is None:
        raise NotFound(f"unknown store {store_id!r}", store_id=store_id)
    return store


def get_customer(*, session: Session, customer_id: str) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"unknown customer {customer_id!r}", customer_id=customer_id)
    return customer


def record_order_event(
    *,
    session: Session,
    order_id: str,
    at: datetime,
    kind: str,
    actor: str = "system",
    from_status: str | None = None,
    to_status: str | None = None,
    detail: dict[str, Any] | None = None,
) -> OrderEvent:
    ev = OrderEvent(
        order_id=order_id,
        at=at,
        kind=kind,
        actor=actor,
        from_status=from_status,
        to_status=to_status,
        detail=detail or {},
    )
    session.add(ev)
    return ev


def transition_order(
    *,
    session: Session,
    order: Order,
    to: OrderStatus,
    at: datetime,
    actor: str = "system",
    detail: dict[str, Any] | None = None,
) -> Order:
    """Move an order through the state machine; an illegal move raises and changes nothing."""
    current = OrderStatus(order.status)
    check_transition(current, to, order_id=order.id)
    order.status = to
    order.version += 1
    if to == OrderStatus.assigned:
        order.assigned_at = at
    elif to == OrderStatus.picked_up:
        order.picked_up_at = at
    elif to == OrderStatus.delivered:
        order.delivered_at = at
        order.closed_at = at
    elif to in (OrderStatus.cancelled, OrderStatus.failed):
        order.closed_at = at
    session.add(order)
    record_order_event(
        session=session,
        order_id=order.id,
        at=at,
        kind="transition",
        actor=actor,
        from_status=current.value,
        to_status=to.value,
        detail=detail,
    )
    return order


def list_orders(
    *, session: Session, statuses: frozenset[OrderStatus] | None = None, zone: str | None = None
) -> list[Order]:
    stmt = select(Order)
    if statuses:
        stmt = stmt.where(Order.status.in_([s.value for s in statuses]))  # type: ignore[attr-defined]
    if zone:
        stmt = stmt.where(Order.zone == zone)
    return list(session.exec(stmt.order_by(Order.id)))


_RIDERS = select(Rider).order_by(col(Rider.id))
_ZONE_RIDERS = select(Rider).where(col(Rider.zone) == bindparam("zone")).order_by(col(Rider.id))


def list_riders(*, session: Session, zone: str | None = None) -> list[Rider]:
    if zone:
        return list(session.scalars(_ZONE_RIDERS, {"zone": zone}))
    return list(session.scalars(_RIDERS))


def clear_world(*, session: Session) -> None:
    """Delete every row of the world tables (a loader replaces the world in one transaction)."""
    from tools import models as m

    world = session.info.pop(_WORLD_REF, None)
    if world is not None and world in session:
        session.expunge(world)  # the rows go by Core deletes: the old world must not be read again

    for table in (
        m.Escalation,
        m.Notification,
        m.Compensation,
        m.OrderEvent,
        m.OrderLine,
        m.Order,
        m.Purchase,
        m.Stock,
        m.Sku,
        m.Rider,
        m.Customer,
        m.Store,
        m.Weather,
        m.WorldInfo,
    ):
        session.exec(table.__table__.delete())  # type: ignore[attr-defined,call-overload,union-attr]

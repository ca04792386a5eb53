"""Stock database functions: atomic reservations, releases and transfers.

The stock model: ``on_hand`` is what the store believes is on its shelves, ``reserved`` is what paid
orders not yet picked up have claimed, ``available = on_hand - reserved`` is what may still be
promised. A paid order's lines hold a reservation at its store until the order is picked up or
cancelled.

Every change is ONE conditional ``UPDATE ... WHERE`` whose rowcount decides success, so two sessions
racing for the last unit cannot both win, on SQLite (database-level write lock) as on PostgreSQL
(row lock; the loser re-evaluates the WHERE against the committed row). One SQLite caveat: a session
that already read inside its transaction (WAL snapshot) cannot write after another session committed;
SQLite answers "database is locked" and we report that as a ``Conflict`` (retry), never as success.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from tools.models import Sku, Stock, Store, Weather, WorldInfo
from tools.state_machine import Conflict, NotFound


def reserve(*, session: Session, store_id: str, sku_id: str, qty: int) -> bool:
    """Claim ``qty`` available units; False (and nothing changed) when fewer are available."""
    if qty <= 0:
        raise ValueError("qty must be positive")
    stmt = (
        update(Stock)
        .where(
            col(Stock.store_id) == store_id,
            col(Stock.sku_id) == sku_id,
            col(Stock.on_hand) - col(Stock.reserved) >= qty,
        )
        .values(reserved=col(Stock.reserved) + qty)
    )
    done = _rowcount(session, stmt) == 1
    _expire(session, store_id, sku_id)
    return done


def release(*, session: Session, store_id: str, sku_id: str, qty: int) -> bool:
    """Give back ``qty`` reserved units; False (and nothing changed) when fewer are reserved."""
    if qty <= 0:
        raise ValueError("qty must be positive")
    stmt = (
        update(Stock)
        .where(col(Stock.store_id) == store_id, col(Stock.sku_id) == sku_id, col(Stock.reserved) >= qty)
        .values(reserved=col(Stock.reserved) - qty)
    )
    done = _rowcount(session, stmt) == 1
    _expire(session, store_id, sku_id)
    return done


def release_up_to(*, session: Session, store_id: str, sku_id: str, qty: int) -> int:
    """Give back up to ``qty`` reserved units (never below zero) and return how many were given back:
    for claims that may be partly gone already (a stockout released them)."""
    for _ in range(5):
        row = session.exec(
            select(Stock.reserved).where(col(Stock.store_id) == store_id, col(Stock.sku_id) == sku_id)
        ).first()
        n = min(qty, row or 0)
        if n <= 0:
            return 0
        if release(session=session, store_id=store_id, sku_id=sku_id, qty=n):
            return n
    raise Conflict("the stock changed concurrently: read it again and retry")


def take_on_hand(*, session: Session, store_id: str, sku_id: str, qty: int) -> bool:
    """Remove ``qty`` unreserved units from the shelf (a transfer out); False when too few are free."""
    if qty <= 0:
        raise ValueError("qty must be positive")
    stmt = (
        update(Stock)
        .where(
            col(Stock.store_id) == store_id,
            col(Stock.sku_id) == sku_id,
            col(Stock.on_hand) - col(Stock.reserved) >= qty,
        )
        .values(on_hand=col(Stock.on_hand) - qty)
    )
    done = _rowcount(session, stmt) == 1
    _expire(session, store_id, sku_id)
    return done


def add_on_hand(*, session: Session, store_id: str, sku_id: str, qty: int) -> None:
    """Put ``qty`` units on the shelf (a transfer in), creating the stock row when the store had none."""
    stmt = (
        update(Stock)
        .where(col(Stock.store_id) == store_id, col(Stock.sku_id) == sku_id)
        .values(on_hand=col(Stock.on_hand) + qty)
    )
    if _rowcount(session, stmt) == 0:
        session.add(Stock(store_id=store_id, sku_id=sku_id, on_hand=qty, reserved=0))
        session.flush()
    _expire(session, store_id, sku_id)


def get_stock_row(*, session: Session, store_id: str, sku_id: str) -> Stock | None:
    return session.get(Stock, (store_id, sku_id))


def get_sku(*, session: Session, sku_id: str) -> Sku:
    sku = session.get(Sku, sku_id)
    if sku is None:
        raise NotFound(f"unknown SKU {sku_id!r}", sku_id=sku_id)
    return sku


def list_stock(*, session: Session, store_id: str, sku_ids: list[str] | None = None) -> list[tuple[Stock, Sku]]:
    stmt = select(Stock, Sku).join(Sku, col(Sku.id) == col(Stock.sku_id)).where(col(Stock.store_id) == store_id)
    if sku_ids is not None:
        stmt = stmt.where(col(Stock.sku_id).in_(sku_ids))
    return list(session.exec(stmt.order_by(col(Stock.sku_id))).all())


@dataclass(frozen=True)
class TransferLeg:
    distance_m: float
    minutes: int  # travel by the MDRP rule plus loading at both ends


def transfer_leg(*, session: Session, source: Store, destination: Store, now: datetime) -> TransferLeg:
    """How long moving stock between two stores takes: travel (weather at ``now``) plus pickup and drop-off
    service minutes, as for an order."""
    world = session.get(WorldInfo, 1)
    if world is None:
        raise NotFound("no world is loaded")
    factor = 1.0
    for w in session.exec(select(Weather).where(col(Weather.starts_at) <= now, col(Weather.ends_at) > now)):
        for x, y in ((source.x, source.y), (destination.x, destination.y)):
            if math.hypot(x - w.x, y - w.y) <= w.radius_m:
                factor = min(factor, w.speed_factor)
    d = math.hypot(source.x - destination.x, source.y - destination.y)
    travel = math.ceil(d / (world.meters_per_minute * factor) - 1e-9) if d else 0
    return TransferLeg(distance_m=d, minutes=travel + world.pickup_service_minutes + world.dropoff_service_minutes)


def _rowcount(session: Session, stmt) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(session.exec(stmt).rowcount)
    except OperationalError as exc:
        if session.get_bind().dialect.name == "sqlite" and "locked" in str(exc.orig):
            raise Conflict("the stock changed concurrently: read it again and retry") from exc
        raise


def _expire(session: Session, store_id: str, sku_id: str) -> None:
    """The UPDATE bypassed the identity map: make a loaded Stock row re-read its values."""
    row = session.identity_map.get(session.identity_key(Stock, (store_id, sku_id)))  # type: ignore[arg-type]
    if row is not None:
        session.expire(row)

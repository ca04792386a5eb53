"""Database functions about the world as a whole: what is loaded, how much of it, and its clock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from tools import models as m
from tools.models import aware


def count_rows(*, session: Session, table: type) -> int:
    return int(session.exec(select(func.count()).select_from(table)).one())


def world_summary(*, session: Session) -> dict[str, Any]:
    """Counts by entity and by status, and the world's clock (``loaded`` False when empty)."""
    world = session.get(m.WorldInfo, 1)
    counts = {
        name: count_rows(session=session, table=table)
        for name, table in (
            ("orders", m.Order),
            ("riders", m.Rider),
            ("stores", m.Store),
            ("customers", m.Customer),
            ("purchases", m.Purchase),
            ("skus", m.Sku),
            ("stock", m.Stock),
            ("order_lines", m.OrderLine),
            ("weather", m.Weather),
            ("compensations", m.Compensation),
            ("notifications", m.Notification),
            ("escalations", m.Escalation),
        )
    }
    by_status = dict(session.exec(select(m.Order.status, func.count()).group_by(m.Order.status)).all())
    riders_by_status = dict(session.exec(select(m.Rider.status, func.count()).group_by(m.Rider.status)).all())
    stores_by_kind = dict(session.exec(select(m.Store.kind, func.count()).group_by(m.Store.kind)).all())
    out: dict[str, Any] = {
        "loaded": world is not None,
        "counts": counts,
        "orders_by_status": {str(getattr(k, "value", k)): int(v) for k, v in sorted(by_status.items())},
        "riders_by_status": {str(getattr(k, "value", k)): int(v) for k, v in sorted(riders_by_status.items())},
        "stores_by_kind": {str(getattr(k, "value", k)): int(v) for k, v in sorted(stores_by_kind.items())},
    }
    if world is not None:
        out.update(
            name=world.name,
            source=world.source,
            seed=world.seed,
            epoch=aware(world.epoch).isoformat(),
            now=aware(world.now).isoformat(),
            minute=round(world.minute(aware(world.now)), 3),
            meters_per_minute=world.meters_per_minute,
            target_minutes=world.target_minutes,
            max_minutes=world.max_minutes,
        )
    return out

"""Database functions behind the order tools: idempotency keys, keyed actions, notices, escalations."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tools.base import ToolContext
from tools.models import Escalation, Notification, OrderEvent
from tools.state_machine import Conflict, NotFound


def idempotency_key(*, ctx: ToolContext, explicit: str | None, tool: str, args: BaseModel) -> str:
    """The key a write is recorded under: the argument, else the executor's, else one derived from the
    incident and the arguments (the same step of the same incident maps to the same key), else fresh."""
    if explicit:
        return explicit
    if ctx.idempotency_key:
        return ctx.idempotency_key
    if ctx.incident_id:
        payload = json.dumps(args.model_dump(mode="json", exclude={"idempotency_key"}), sort_keys=True)
        digest = hashlib.sha256(f"{tool}|{ctx.incident_id}|{payload}".encode()).hexdigest()[:32]
        return f"{tool}:{ctx.incident_id}:{digest}"
    return f"{tool}:{uuid.uuid4().hex}"


def find_keyed_event(*, session: Session, order_id: str, kind: str, key: str) -> OrderEvent | None:
    """A previous run of the same keyed action on this order (orders have few events: filter in Python,
    which works alike on every backend's JSON column)."""
    for ev in session.exec(
        select(OrderEvent).where(col(OrderEvent.order_id) == order_id, col(OrderEvent.kind) == kind)
    ):
        if (ev.detail or {}).get("idempotency_key") == key:
            return ev
    return None


def record_notification(
    *,
    session: Session,
    order_id: str | None,
    customer_id: str,
    template: str,
    message: str,
    channel: str,
    key: str,
    now: datetime,
) -> tuple[Notification, bool]:
    """Insert a notice once per key; returns (row, created). The same key with other content is a
    Conflict."""
    existing = _by_key(session, Notification, key)
    if existing is None:
        row = Notification(
            order_id=order_id,
            customer_id=customer_id,
            template=template,
            message=message,
            channel=channel,
            idempotency_key=key,
            created_at=now,
        )
        if _insert_once(session, row):
            return row, True
        existing = _by_key(session, Notification, key)
        assert existing is not None
    if (existing.order_id, existing.template) != (order_id, template):
        raise Conflict(
            "idempotency key already used for a different notice", idempotency_key=key, order_id=existing.order_id
        )
    return existing, False


def record_escalation(
    *,
    session: Session,
    incident_id: str | None,
    order_ids: list[str],
    reason: str,
    team: str,
    key: str,
    now: datetime,
) -> tuple[Escalation, bool]:
    existing = _by_key(session, Escalation, key)
    if existing is None:
        row = Escalation(
            incident_id=incident_id,
            order_ids=order_ids,
            reason=reason,
            team=team,
            idempotency_key=key,
            created_at=now,
        )
        if _insert_once(session, row):
            return row, True
        existing = _by_key(session, Escalation, key)
        assert existing is not None
    if existing.team != team or sorted(existing.order_ids or []) != sorted(order_ids):
        raise Conflict("idempotency key already used for a different escalation", idempotency_key=key)
    return existing, False


def require_ids(*, session: Session, model: Any, ids: list[str], what: str) -> None:
    """NotFound naming every unknown id."""
    if not ids:
        return
    known = set(session.exec(select(model.id).where(col(model.id).in_(ids))))
    missing = sorted(set(ids) - known)
    if missing:
        raise NotFound(f"unknown {what}: {', '.join(missing[:10])}", missing=missing)


def _by_key(session: Session, model: Any, key: str) -> Any:
    return session.exec(select(model).where(model.idempotency_key == key)).first()


def _insert_once(session: Session, row: Any) -> bool:
    """Insert in a savepoint; a concurrent insert of the same key loses quietly (False)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
        return True
    except IntegrityError:
        return False

"""Database functions for compensations: look-ups and the once-only payment under an idempotency key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tools.models import Compensation, CompensationKind, Customer, Order
from tools.service import record_order_event


def find_by_key(*, session: Session, idempotency_key: str) -> Compensation | None:
    stmt = select(Compensation).where(Compensation.idempotency_key == idempotency_key)
    return session.exec(stmt).first()


def list_compensations(*, session: Session, order_id: str | None = None) -> list[Compensation]:
    stmt = select(Compensation)
    if order_id is not None:
        stmt = stmt.where(Compensation.order_id == order_id)
    return list(session.exec(stmt.order_by(col(Compensation.id))))


def refunded_cents(*, session: Session, order_id: str) -> int:
    stmt = select(func.coalesce(func.sum(Compensation.amount_cents), 0)).where(
        Compensation.order_id == order_id, Compensation.kind == CompensationKind.refund
    )
    return int(session.exec(stmt).one())


def create_compensation(
    *,
    session: Session,
    order: Order,
    kind: CompensationKind,
    amount_cents: int,
    reason: str,
    idempotency_key: str,
    now: datetime,
    actor: str,
    incident_id: str | None,
) -> tuple[Compensation, bool]:
    """Pay once per key: ``(record, created)``; ``created`` is False when the key was already used.

    The look-up first handles the common retry; the insert sits in its own savepoint so that a
    concurrent payer winning the unique constraint between look-up and insert costs us only that
    savepoint, after which the winner's row is returned. Only a new row bumps the customer's
    compensation count and writes an order event.
    """
    existing = find_by_key(session=session, idempotency_key=idempotency_key)
    if existing is not None:
        return existing, False
    comp = Compensation(
        order_id=order.id,
        customer_id=order.customer_id,
        kind=kind,
        amount_cents=amount_cents,
        currency=order.currency,
        reason=reason,
        idempotency_key=idempotency_key,
        incident_id=incident_id,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(comp)
            session.flush()
    except IntegrityError:
        winner = find_by_key(session=session, idempotency_key=idempotency_key)
        if winner is None:  # the constraint that failed was not the key's: a real error
            raise
        return winner, False
    customer = session.get(Customer, order.customer_id)
    if customer is not None:
        customer.compensations_count += 1
        session.add(customer)
    record_order_event(
        session=session,
        order_id=order.id,
        at=now,
        kind="compensation",
        actor=actor,
        detail={
            "compensation_id": comp.id,
            "kind": kind.value,
            "amount_cents": amount_cents,
            "currency": order.currency,
            "idempotency_key": idempotency_key,
            "incident_id": incident_id,
        },
    )
    session.flush()
    return comp, True

"""The stockout-after-payment path: picking finds fewer units on the shelf than the order was promised.

How it happens: an order reserved its units at payment, then the store's real count turned out lower
(damaged or missing goods: the simulator's injector lowers ``Stock.on_hand``), so ``on_hand`` can fall
below ``reserved``.

Which orders still claim shelf units: those not yet picked (placed, confirmed, picking), and those
assigned to a rider before their ready time (see ``claims_shelf``). Once an order is ready its units
are in a bag, off the shelf (the world generator reserves stock for confirmed and picking orders only).

Who goes short: the shelf serves reservations first come, first served by placement time. For each line
of the order being picked, the units claimed by orders of the same store placed earlier are served
first; the line is short when what remains on the shelf is less than its quantity. A short line is
marked ``status="short"`` and gives back its reservation (those units do not exist), an
``OrderEvent(kind="stockout")`` records it, and the caller (the injector, which then emits a
``stockout_after_payment`` event, or the playbook) decides: substitute, transfer from a nearby store,
refund the line, or cancel. Calling it again on the same order finds nothing new (short lines are not
re-examined).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from tools.inventory.service import release_up_to
from tools.models import Order, OrderLine, Stock, aware
from tools.service import get_order, record_order_event
from tools.state_machine import OrderStatus

# before picking is done an order's units are still on the shelf, claimed by its reservation
SHELF = (OrderStatus.placed, OrderStatus.confirmed, OrderStatus.picking)


def claims_shelf(order: Order, now: datetime) -> bool:
    """Whether the order's lines still hold reserved units on the shelf: statuses before picking is
    done, or assigned to a rider before its ready time (a rider may be assigned early)."""
    status = OrderStatus(order.status)
    return status in SHELF or (status == OrderStatus.assigned and aware(order.ready_at) > aware(now))


LIVE_LINE = ("ok", "substituted")


@dataclass(frozen=True)
class ShortLine:
    line_id: int
    sku_id: str
    quantity: int  # what the line wanted
    on_shelf_for_order: int  # what was left for this order after earlier orders were served


def detect_stockouts(*, session: Session, order_id: str, now: datetime) -> list[ShortLine]:
    """Mark the order's lines that the shelf cannot cover as short, release their reservations, and
    return them (empty when everything is there)."""
    order = get_order(session=session, order_id=order_id)
    if not claims_shelf(order, now):
        return []
    lines = list(
        session.exec(
            select(OrderLine)
            .where(col(OrderLine.order_id) == order_id, col(OrderLine.status).in_(LIVE_LINE))
            .order_by(col(OrderLine.id))
        )
    )
    short: list[ShortLine] = []
    for line in lines:
        stock = session.get(Stock, (order.store_id, line.sku_id))
        on_hand = stock.on_hand if stock is not None else 0
        ahead = _claimed_before(session=session, order=order, sku_id=line.sku_id, now=aware(now))
        left = max(0, on_hand - ahead)
        if left >= line.quantity:
            continue
        line.status = "short"
        session.add(line)
        release_up_to(session=session, store_id=order.store_id, sku_id=line.sku_id, qty=line.quantity)
        short.append(
            ShortLine(line_id=line.id or 0, sku_id=line.sku_id, quantity=line.quantity, on_shelf_for_order=left)
        )
    if short:
        order.version += 1
        session.add(order)
        record_order_event(
            session=session,
            order_id=order.id,
            at=aware(now),
            kind="stockout",
            detail={"short": [{"line_id": s.line_id, "sku_id": s.sku_id, "quantity": s.quantity} for s in short]},
        )
        session.flush()
    return short


def _claimed_before(*, session: Session, order: Order, sku_id: str, now: datetime) -> int:
    """Units of ``sku_id`` at the order's store held by active orders placed before this one."""
    stmt = (
        select(func.coalesce(func.sum(OrderLine.quantity), 0))
        .join(Order, col(Order.id) == col(OrderLine.order_id))
        .where(
            col(Order.store_id) == order.store_id,
            col(OrderLine.sku_id) == sku_id,
            col(OrderLine.status).in_(LIVE_LINE),
            or_(
                col(Order.status).in_([s.value for s in SHELF]),
                and_(col(Order.status) == OrderStatus.assigned.value, col(Order.ready_at) > now),
            ),
            or_(
                col(Order.placed_at) < order.placed_at,
                and_(col(Order.placed_at) == order.placed_at, col(Order.id) < order.id),
            ),
        )
    )
    return int(session.exec(stmt).one())

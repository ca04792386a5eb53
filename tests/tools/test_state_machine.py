"""The order lifecycle: every legal move is allowed, every other raises and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest
from sqlmodel import Session, select

from tools import models as m
from tools.service import transition_order
from tools.state_machine import (
    ACTIVE,
    CANCELLABLE,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    OrderStatus,
    can_transition,
    check_transition,
)

S = OrderStatus
ALL_PAIRS = list(product(list(OrderStatus), list(OrderStatus)))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]
EPOCH = datetime(2026, 11, 20, 16, tzinfo=UTC)


def test_the_table_covers_every_status_and_the_happy_path() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    path = [S.placed, S.confirmed, S.picking, S.ready, S.assigned, S.picked_up, S.delivered]
    for a, b in zip(path, path[1:], strict=False):
        assert can_transition(a, b)
    assert all(not TRANSITIONS[t] for t in TERMINAL)
    assert ACTIVE == frozenset(OrderStatus) - TERMINAL
    assert S.picked_up not in CANCELLABLE and S.placed in CANCELLABLE


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transition(current: OrderStatus, target: OrderStatus) -> None:
    check_transition(current, target, order_id="o1")  # does not raise
    check_transition(current.value, target.value)  # plain strings too


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transition_raises(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(IllegalTransition) as err:
        check_transition(current, target, order_id="o9")
    assert err.value.details == {"order_id": "o9", "current": current.value, "target": target.value}
    assert "o9" in err.value.message


def _world(session: Session) -> m.Order:
    session.add(m.WorldInfo(name="t", source="test", epoch=EPOCH, now=EPOCH))
    session.add(m.Store(id="s1", name="S", x=0, y=0))
    session.add(m.Customer(id="c1", name="C"))
    session.flush()  # parents first: the tables have foreign keys but no ORM relationships
    order = m.Order(
        id="o1",
        customer_id="c1",
        store_id="s1",
        x=100,
        y=0,
        placed_at=EPOCH,
        ready_at=EPOCH + timedelta(minutes=10),
        promised_at=EPOCH + timedelta(minutes=40),
    )
    session.add(order)
    session.commit()
    return order


def test_transition_order_in_the_database_follows_the_machine(engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        order = _world(session)
        t = EPOCH
        for k, to in enumerate([S.confirmed, S.picking, S.ready, S.assigned, S.picked_up, S.delivered]):
            transition_order(session=session, order=order, to=to, at=t + timedelta(minutes=k))
        session.commit()
        assert order.status == S.delivered and order.version == 6
        assert order.delivered_at is not None and order.closed_at is not None
        history = session.exec(select(m.OrderEvent).where(m.OrderEvent.order_id == "o1")).all()
        assert [(h.from_status, h.to_status) for h in history][-1] == ("picked_up", "delivered")
        assert len(history) == 6


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], S.delivered),  # placed -> delivered
        ([S.confirmed, S.picking, S.ready, S.assigned, S.picked_up], S.cancelled),  # food already out
        ([S.cancelled], S.confirmed),  # terminal
        ([S.confirmed, S.picking, S.ready], S.picking),  # ready cannot go back
    ],
)
def test_illegal_move_in_the_database_changes_nothing(engine, path: list[OrderStatus], bad: OrderStatus) -> None:
    with Session(engine, expire_on_commit=False) as session:
        order = _world(session)
        for to in path:
            transition_order(session=session, order=order, to=to, at=EPOCH)
        session.commit()
        version, status = order.version, order.status
        n_events = len(session.exec(select(m.OrderEvent)).all())
        with pytest.raises(IllegalTransition):
            transition_order(session=session, order=order, to=bad, at=EPOCH)
        session.commit()
        session.refresh(order)
        assert (order.status, order.version) == (status, version)
        assert len(session.exec(select(m.OrderEvent)).all()) == n_events

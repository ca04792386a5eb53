"""A small hand-built world for the compensation tests (no dependency on the world generator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from tools.models import Customer, Order, Purchase, Rider, RiderStatus, Store, Tier, Weather, WorldInfo
from tools.state_machine import OrderStatus

EPOCH = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
NOW = EPOCH + timedelta(minutes=120)


def build_world(session: Session) -> None:
    """Stores S1 (clear) and S2 (under a 0.6 storm); customers C1 bronze without history, C2
    platinum with a year of purchases, C3 gold; orders:

    O1 delivered 5 min early, O2 picked up and already 30 min past its promise, O3 ready and
    unassigned with time to spare, O4 in the storm and late, O5 a $10 order of C1.
    """
    session.add(WorldInfo(name="comp-test", source="test", epoch=EPOCH, now=NOW))
    session.add(Store(id="S1", name="Clear kitchen", x=0.0, y=0.0, zone="z1"))
    session.add(Store(id="S2", name="Storm kitchen", x=10_000.0, y=0.0, zone="z2"))
    session.add(
        Weather(
            zone="z2",
            x=10_000.0,
            y=0.0,
            radius_m=3_000.0,
            speed_factor=0.6,
            starts_at=EPOCH,
            ends_at=NOW + timedelta(hours=2),
            label="storm",
        )
    )
    session.add(Customer(id="C1", name="New", tier=Tier.bronze))
    session.add(
        Customer(
            id="C2",
            name="Loyal",
            tier=Tier.platinum,
            complaints_count=1,
            compensations_count=2,
            refund_claims_count=0,
            channel="app",
        )
    )
    session.add(Customer(id="C3", name="Gold", tier=Tier.gold, compensations_count=5, refund_claims_count=3))
    session.flush()
    # C2: 24 purchases of $40 in the last 12 months, and one older one that must not count
    for k in range(24):
        session.add(Purchase(customer_id="C2", purchased_at=NOW - timedelta(days=5 + 15 * k), amount_cents=4_000))
    session.add(Purchase(customer_id="C2", purchased_at=NOW - timedelta(days=400), amount_cents=99_999))
    session.add(
        Rider(
            id="R1",
            name="Rider 1",
            x=3_200.0,
            y=0.0,
            status=RiderStatus.busy,
            shift_start=EPOCH,
            shift_end=NOW + timedelta(hours=4),
        )
    )
    session.flush()
    orders = [
        Order(
            id="O1",
            customer_id="C1",
            store_id="S1",
            x=1_000.0,
            y=0.0,
            status=OrderStatus.delivered,
            value_cents=2_500,
            placed_at=NOW - timedelta(minutes=60),
            ready_at=NOW - timedelta(minutes=45),
            promised_at=NOW - timedelta(minutes=10),
            delivered_at=NOW - timedelta(minutes=15),
        ),
        Order(
            id="O2",
            customer_id="C2",
            store_id="S1",
            x=6_400.0,
            y=0.0,
            status=OrderStatus.picked_up,
            rider_id="R1",
            value_cents=6_000,
            placed_at=NOW - timedelta(minutes=80),
            ready_at=NOW - timedelta(minutes=60),
            promised_at=NOW - timedelta(minutes=30),
        ),
        Order(
            id="O3",
            customer_id="C3",
            store_id="S1",
            x=640.0,
            y=0.0,
            status=OrderStatus.ready,
            value_cents=3_000,
            placed_at=NOW - timedelta(minutes=10),
            ready_at=NOW,
            promised_at=NOW + timedelta(minutes=30),
        ),
        Order(
            id="O4",
            customer_id="C2",
            store_id="S2",
            x=10_960.0,
            y=0.0,
            status=OrderStatus.ready,
            value_cents=4_000,
            channel="phone",
            placed_at=NOW - timedelta(minutes=40),
            ready_at=NOW,
            promised_at=NOW - timedelta(minutes=5),
        ),
        Order(
            id="O5",
            customer_id="C1",
            store_id="S1",
            x=320.0,
            y=0.0,
            status=OrderStatus.ready,
            value_cents=1_000,
            placed_at=NOW - timedelta(minutes=50),
            ready_at=NOW - timedelta(minutes=40),
            promised_at=NOW - timedelta(minutes=20),
        ),
    ]
    for o in orders:
        session.add(o)
    session.flush()

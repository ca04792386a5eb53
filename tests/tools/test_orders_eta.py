"""predict_dropoffs on the hand-computed small world (100 m = 1 minute, 4 + 4 service minutes)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, update

from tests.tools.factories import (
    NOW,
    add_weather,
    build_small_world,
    make_customer,
    make_rider,
    make_store,
    make_world,
    minutes,
)
from tools.models import Order, Rider, RiderStatus
from tools.orders.eta import NO_RIDER_WAIT_MINUTES, predict_dropoffs
from tools.state_machine import OrderStatus


@pytest.fixture
def session(engine: Engine):  # type: ignore[no-untyped-def]
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        yield s


def at(m: float):  # type: ignore[no-untyped-def]
    return minutes(m)


def test_small_world_by_hand(session: Session) -> None:
    p = predict_dropoffs(session=session, now=NOW)
    # terminal orders get no prediction
    assert set(p) == {"O1", "O2", "O3", "O5", "O7", "O8"}
    # RB delivers its bag first: 1 km + 4 min drop-off
    assert (p["O3"].basis, p["O3"].rider_id, p["O3"].pickup_at) == ("in_bag", "RB", None)
    assert p["O3"].dropoff_at == at(14) and p["O3"].minutes_late == -16 and not p["O3"].late
    # then back to R1 (10), food ready at +10 long before, pickup 4, 2 km (20), drop-off 4
    assert (p["O2"].basis, p["O2"].pickup_at, p["O2"].dropoff_at) == ("assigned", at(28), at(52))
    assert p["O2"].minutes_late == 32 and p["O2"].late
    # riderless orders, earliest ready first: O7 (ready -20) takes RA (15 min to D2)
    assert (p["O7"].rider_id, p["O7"].basis, p["O7"].pickup_at, p["O7"].dropoff_at) == (
        "RA",
        "next_rider",
        at(19),
        at(53),
    )
    assert p["O7"].minutes_late == 58
    # O1: RB (free at +52 at O2's drop-off, 23 min to D1) beats RA (free at +53, 37 min away)
    assert (p["O1"].rider_id, p["O1"].pickup_at, p["O1"].dropoff_at) == ("RB", at(79), at(93))
    # O5: RA arrives at +90, picks up at +94, 943 m -> 10 min, + 4
    assert (p["O5"].rider_id, p["O5"].dropoff_at) == ("RA", at(108))
    # O8 in the south: RE is 500 m from D3
    assert (p["O8"].rider_id, p["O8"].pickup_at, p["O8"].dropoff_at) == ("RE", at(9), at(23))
    # the offline and the off-shift rider were never used
    assert {x.rider_id for x in p.values()} == {"RA", "RB", "RE"}


def test_subset_equals_full_prediction(session: Session) -> None:
    full = predict_dropoffs(session=session, now=NOW)
    part = predict_dropoffs(session=session, order_ids=["O1", "O4", "nope"], now=NOW)
    assert part == {"O1": full["O1"]}


def test_weather_slows_legs_touching_the_disc(session: Session) -> None:
    add_weather(session, x=3000, y=0, radius_m=600, factor=0.5)  # covers D2 only
    p = predict_dropoffs(session=session, now=NOW)
    # RA -> D2: 1.5 km at 50 m/min = 30; pickup at 34; D2 -> drop-off 3 km at 50 m/min = 60 (+4)
    assert (p["O7"].pickup_at, p["O7"].dropoff_at) == (at(34), at(98))
    # a leg not touching the disc is unchanged
    assert p["O3"].dropoff_at == at(14)


def test_expired_weather_is_ignored(session: Session) -> None:
    add_weather(session, x=3000, y=0, radius_m=600, factor=0.5)
    p = predict_dropoffs(session=session, now=NOW + (at(121) - NOW))
    assert p["O7"].basis == "next_rider"  # predicted, and the weather (ended at +120) did not apply
    q = predict_dropoffs(session=session, now=NOW)
    assert q["O7"].dropoff_at - NOW > p["O7"].dropoff_at - at(121)


def test_no_rider_on_shift_uses_pessimistic_default(session: Session) -> None:
    session.exec(update(Rider).values(status=RiderStatus.offline))  # type: ignore[call-overload]
    session.commit()
    p = predict_dropoffs(session=session, now=NOW)
    # O1: ready at +5, a rider assumed NO_RIDER_WAIT_MINUTES later, pickup 4, 1 km + 4
    assert p["O1"].basis == "no_rider" and p["O1"].rider_id is None
    assert p["O1"].dropoff_at == at(5 + NO_RIDER_WAIT_MINUTES + 4 + 10 + 4)
    # O3's bag is stranded with the offline rider RB at (0, 0): collected where RB stopped
    assert p["O3"].basis == "stranded"
    assert p["O3"].dropoff_at == at(NO_RIDER_WAIT_MINUTES + 4 + 10 + 4)


def test_offline_rider_bag_is_collected_by_another(session: Session) -> None:
    rb = session.get(Rider, "RB")
    assert rb is not None
    rb.status = RiderStatus.offline
    session.add(rb)
    session.commit()
    p = predict_dropoffs(session=session, now=NOW)
    assert p["O3"].basis == "stranded" and p["O3"].rider_id in {"RA", "RE"}
    # O2 (assigned to the offline rider, not picked up) goes back to the pool
    assert p["O2"].basis == "next_rider" and p["O2"].rider_id != "RB"


def test_prep_delay_only_for_food_not_ready(session: Session) -> None:
    from tools.models import Store

    d1 = session.get(Store, "D1")
    assert d1 is not None
    d1.prep_delay_minutes = 100
    session.add(d1)
    session.commit()
    p = predict_dropoffs(session=session, now=NOW)
    assert p["O1"].pickup_at is not None and p["O1"].pickup_at >= at(105 + 4)
    assert p["O7"].dropoff_at == at(53)  # D2: untouched


@pytest.mark.slow
def test_five_thousand_orders_fast(sqlite_only_engine: Engine) -> None:
    rng = np.random.default_rng(7)
    with Session(sqlite_only_engine) as s:
        make_world(s)
        for i in range(50):
            make_store(s, f"S{i}", *rng.uniform(0, 20000, 2))
        make_customer(s, "C")
        for i in range(600):
            status = RiderStatus.busy if i < 400 else RiderStatus.idle
            make_rider(s, f"R{i}", *rng.uniform(0, 20000, 2), status=status)
        s.commit()
        statuses = [OrderStatus.confirmed, OrderStatus.ready, OrderStatus.assigned, OrderStatus.picked_up]
        rows = []
        for i in range(5000):
            st = statuses[i % 4]
            rows.append(
                {
                    "id": f"O{i}",
                    "customer_id": "C",
                    "store_id": f"S{i % 50}",
                    "x": float(rng.uniform(0, 20000)),
                    "y": float(rng.uniform(0, 20000)),
                    "zone": "north",
                    "status": st.value,
                    "value_cents": 1000,
                    "currency": "USD",
                    "channel": "app",
                    "note": "",
                    "priority": 0,
                    "on_hold": False,
                    "version": 0,
                    "rider_id": f"R{i % 400}" if st in (OrderStatus.assigned, OrderStatus.picked_up) else None,
                    "placed_at": minutes(-10),
                    "ready_at": minutes(float(rng.uniform(-10, 30))),
                    "promised_at": minutes(float(rng.uniform(20, 60))),
                }
            )
        s.exec(insert(Order), params=rows)  # type: ignore[call-overload]
        s.commit()
        add_weather(s, x=10000, y=10000, radius_m=5000, factor=0.6)
        t0 = time.perf_counter()
        p = predict_dropoffs(session=s, now=NOW)
        elapsed = time.perf_counter() - t0
    assert len(p) == 5000
    assert all(x.dropoff_at >= NOW for x in p.values())
    assert {x.basis for x in p.values()} >= {"in_bag", "assigned", "next_rider"}
    print(f"predict_dropoffs 5000 orders / 600 riders: {elapsed * 1000:.0f} ms")
    assert elapsed < 5.0

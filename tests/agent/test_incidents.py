"""Incidents from events: idempotent by event id, correlated by family + zone + window or by order."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from agent.incidents import IngestResult, ingest_event, ingest_events
from agent.models import Incident, IncidentEvent, IncidentStatus
from tools.db import session_scope
from tools.events import ExceptionEvent, ExceptionType

T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
WINDOW = 600


def ev(
    eid: str,
    typ: ExceptionType,
    *,
    zone: str = "z1",
    minutes: float = 0,
    orders: list[str] | None = None,
    **payload: object,
) -> ExceptionEvent:
    return ExceptionEvent(
        id=eid,
        type=typ,
        occurred_at=T0 + timedelta(minutes=minutes),
        zone=zone,
        order_ids=orders or [],
        payload=dict(payload),
    )


def count(session: Session, model: type) -> int:
    return int(session.exec(select(func.count()).select_from(model)).one())


def test_same_event_id_twice_has_one_effect(engine: Engine) -> None:
    e = ev("e1", ExceptionType.rider_offline, orders=["o1"])
    with session_scope(engine) as s:
        first = ingest_event(session=s, event=e, now=T0, window_s=WINDOW)
    with session_scope(engine) as s:
        again = ingest_event(session=s, event=e, now=T0, window_s=WINDOW)
    assert first.new_incident and not first.duplicate
    assert again.duplicate and again.incident_id == first.incident_id and not again.new_incident
    with Session(engine) as s:
        assert count(s, IncidentEvent) == 1
        inc = s.get(Incident, first.incident_id)
        assert inc is not None and inc.event_ids == ["e1"] and inc.thread_id == inc.id


def test_storm_events_in_one_zone_open_one_incident(engine: Engine) -> None:
    events = [ev("w1", ExceptionType.weather_slowdown, speed_factor=0.6)]
    events += [ev(f"late-{i}", ExceptionType.order_late_risk, minutes=i / 200, orders=[f"o{i}"]) for i in range(278)]
    events.append(ev("short-1", ExceptionType.rider_shortage, minutes=1.5))
    with session_scope(engine) as s:
        results = ingest_events(session=s, events=events, now=T0, window_s=WINDOW)
    assert len({r.incident_id for r in results}) == 1
    assert sum(r.new_incident for r in results) == 1
    with Session(engine) as s:
        inc = s.get(Incident, results[0].incident_id)
        assert inc is not None
        assert inc.family == "delivery_delay" and inc.type == "weather_slowdown"
        assert len(inc.order_ids) == 278 and len(inc.event_ids) == 280
        assert inc.payloads[0]["speed_factor"] == 0.6


def test_other_zone_or_outside_window_opens_another_incident(engine: Engine) -> None:
    with session_scope(engine) as s:
        a = ingest_event(
            session=s, event=ev("a", ExceptionType.order_late_risk, orders=["o1"]), now=T0, window_s=WINDOW
        )
        b = ingest_event(
            session=s, event=ev("b", ExceptionType.order_late_risk, zone="z2", orders=["o2"]), now=T0, window_s=WINDOW
        )
        c = ingest_event(
            session=s, event=ev("c", ExceptionType.order_late_risk, minutes=11, orders=["o3"]), now=T0, window_s=WINDOW
        )
        d = ingest_event(
            session=s, event=ev("d", ExceptionType.order_late_risk, minutes=5, orders=["o4"]), now=T0, window_s=WINDOW
        )
    assert len({a.incident_id, b.incident_id, c.incident_id}) == 3
    assert d.incident_id == a.incident_id  # within 10 minutes of a's last event


def test_event_about_an_order_already_in_an_open_incident_joins_it(engine: Engine) -> None:
    with session_scope(engine) as s:
        storm = ingest_event(
            session=s, event=ev("w", ExceptionType.order_late_risk, orders=["o1", "o2"]), now=T0, window_s=WINDOW
        )
        complaint = ingest_event(
            session=s,
            event=ev(
                "c",
                ExceptionType.customer_complaint,
                zone="elsewhere",
                minutes=30,
                orders=["o2"],
                text="where is my food",
            ),
            now=T0,
            window_s=WINDOW,
        )
        other = ingest_event(
            session=s, event=ev("c2", ExceptionType.customer_complaint, orders=["o9"]), now=T0, window_s=WINDOW
        )
    assert complaint.incident_id == storm.incident_id and not complaint.new_incident
    assert other.new_incident  # complaints about other orders are their own case, even in the zone


def test_closed_incident_is_not_joined(engine: Engine) -> None:
    with session_scope(engine) as s:
        first = ingest_event(
            session=s, event=ev("a", ExceptionType.rider_offline, orders=["o1"]), now=T0, window_s=WINDOW
        )
        inc = s.get(Incident, first.incident_id)
        assert inc is not None
        inc.status = IncidentStatus.resolved
        s.add(inc)
    with session_scope(engine) as s:
        again = ingest_event(
            session=s, event=ev("b", ExceptionType.rider_offline, orders=["o1"]), now=T0, window_s=WINDOW
        )
    assert again.new_incident and again.incident_id != first.incident_id


def test_concurrent_deliveries_of_one_event_have_one_effect(engine: Engine) -> None:
    e = ev("dup", ExceptionType.stalled_in_transit, orders=["o1"])
    barrier = threading.Barrier(4)
    results: list[IngestResult] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait()
            with session_scope(engine) as s:
                results.append(ingest_event(session=s, event=e, now=T0, window_s=WINDOW))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(engine) as s:
        assert count(s, IncidentEvent) == 1
        assert count(s, Incident) == 1
    # a loser either saw the row (duplicate) or lost the insert race and its transaction failed cleanly
    assert sum(1 for r in results if not r.duplicate) <= 1
    assert len(results) + len(errors) == 4

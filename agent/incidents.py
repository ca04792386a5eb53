"""From exception events to incidents: idempotent by event id, related events correlated into one.

Correlation: an event joins an open incident when (a) one of its orders is already in that incident,
or (b) the incident has the same family and zone and its last event is within ``window_s`` of this
one. The storm's weather slowdown, rider shortage and hundreds of order_late_risk events in one
zone are one family, so the whole storm is ONE incident and one plan, not 278 small ones.

Idempotency: ``IncidentEvent.event_id`` is the primary key. A repeated id is reported as a duplicate;
two concurrent deliveries of the same id race on the insert and the loser's savepoint rolls back
(IntegrityError), so the event has one effect whichever process wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from agent.models import OPEN_STATUSES, Incident, IncidentEvent, IncidentStatus
from tools.events import ExceptionEvent, ExceptionType
from tools.models import aware

T = ExceptionType
# events of one family in one zone are symptoms of one underlying problem
FAMILIES: dict[ExceptionType, str] = {
    T.weather_slowdown: "delivery_delay",
    T.rider_shortage: "delivery_delay",
    T.order_late_risk: "delivery_delay",
    T.rider_offline: "rider_offline",
    T.prep_delay: "prep_delay",
    T.stockout_after_payment: "stockout_after_payment",
    T.stalled_in_transit: "stalled_in_transit",
    T.address_change: "address_change",
    T.customer_complaint: "customer_complaint",
}
# families where each event is its own case even in the same zone (one customer, one order)
PER_SUBJECT_FAMILIES = frozenset({"stockout_after_payment", "address_change", "customer_complaint"})


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    incident_id: str
    duplicate: bool
    new_incident: bool


def family_of(event_type: str) -> str:
    return FAMILIES.get(ExceptionType(event_type), event_type)


def incident_id_for(event_id: str) -> str:
    """Deterministic: the same first event always opens the same incident id (replays compare)."""
    return "inc-" + hashlib.sha256(event_id.encode()).hexdigest()[:16]


def ingest_event(*, session: Session, event: ExceptionEvent, now: datetime, window_s: int) -> IngestResult:
    return ingest_events(session=session, events=[event], now=now, window_s=window_s)[0]


def ingest_events(
    *, session: Session, events: Sequence[ExceptionEvent], now: datetime, window_s: int
) -> list[IngestResult]:
    """Ingest a batch in order: one read of the open incidents and one flush for the whole batch (the
    storm is ~280 events). If a concurrent delivery took one of the ids, the batch is redone one
    event at a time, each in its own savepoint, so only that event is reported as a duplicate."""
    try:
        with session.begin_nested():
            results = _ingest(session, events, now, window_s, one_by_one=False)
            session.flush()
        return results
    except IntegrityError:
        return _ingest(session, events, now, window_s, one_by_one=True)


def _ingest(
    session: Session, events: Sequence[ExceptionEvent], now: datetime, window_s: int, *, one_by_one: bool
) -> list[IngestResult]:
    ids = [e.id for e in events]
    known = {
        row.event_id: row.incident_id
        for row in session.exec(select(IncidentEvent).where(col(IncidentEvent.event_id).in_(ids)))
    }
    open_incidents = list(
        session.exec(select(Incident).where(col(Incident.status).in_([s.value for s in OPEN_STATUSES])))
    )
    by_order: dict[str, Incident] = {}
    for inc in open_incidents:
        for oid in inc.order_ids:
            by_order.setdefault(oid, inc)
    window = timedelta(seconds=window_s)
    results: list[IngestResult] = []
    batch: list[dict[str, Any]] = []  # one multi-row INSERT instead of one ORM insert per event
    with session.no_autoflush:
        for event in events:
            if event.id in known:
                results.append(IngestResult(event.id, known[event.id], duplicate=True, new_incident=False))
                continue
            incident = _match(event, open_incidents, by_order, window)
            new = incident is None
            if incident is None:
                incident = _open(event, now)
            row = IncidentEvent(
                event_id=event.id,
                incident_id=incident.id,
                type=event.type.value,
                received_at=now,
                occurred_at=event.occurred_at,
                event=event.model_dump(mode="json"),  # as received: `eval export` replays it
            )
            if one_by_one:
                try:
                    with session.begin_nested():
                        if new:
                            session.add(incident)
                        session.add(row)
                        session.flush([incident, row] if new else [row])
                except IntegrityError:
                    # another process took this event id first (the incident id derives from the
                    # event id, so a colliding new incident means the same event): one effect only
                    taken = session.get(IncidentEvent, event.id)
                    iid = taken.incident_id if taken is not None else incident.id
                    results.append(IngestResult(event.id, iid, duplicate=True, new_incident=False))
                    continue
            else:
                if new:
                    session.add(incident)
                batch.append(row.model_dump())
            if new:
                open_incidents.append(incident)
            _absorb(incident, event, now)
            for oid in event.order_ids:
                by_order.setdefault(oid, incident)
            session.add(incident)
            known[event.id] = incident.id
            results.append(IngestResult(event.id, incident.id, duplicate=False, new_incident=new))
    session.flush()
    if batch:
        session.execute(insert(IncidentEvent), batch)
    return results


def _match(
    event: ExceptionEvent, open_incidents: list[Incident], by_order: dict[str, Incident], window: timedelta
) -> Incident | None:
    for oid in event.order_ids:
        if oid in by_order:
            return by_order[oid]
    family = family_of(event.type)
    if family in PER_SUBJECT_FAMILIES:
        return None
    at = aware(event.occurred_at)
    for inc in open_incidents:
        if inc.family == family and inc.zone == event.zone and abs(at - aware(inc.last_event_at)) <= window:
            return inc
    return None


def _open(event: ExceptionEvent, now: datetime) -> Incident:
    iid = incident_id_for(event.id)
    return Incident(
        id=iid,
        thread_id=iid,
        type=event.type.value,
        family=family_of(event.type),
        zone=event.zone,
        status=IncidentStatus.open,
        opened_at=now,
        updated_at=now,
        last_event_at=event.occurred_at,
    )


def _union(current: list[str], new: list[str]) -> list[str]:
    seen = set(current)
    return current + [x for x in new if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]


def _absorb(incident: Incident, event: ExceptionEvent, now: datetime) -> None:
    # JSON columns only persist on reassignment, so every list is rebuilt rather than appended to
    incident.event_ids = [*incident.event_ids, event.id]
    incident.order_ids = _union(list(incident.order_ids), event.order_ids)
    incident.rider_ids = _union(list(incident.rider_ids), event.rider_ids)
    incident.store_ids = _union(list(incident.store_ids), event.store_ids)
    incident.customer_ids = _union(list(incident.customer_ids), event.customer_ids)
    if event.payload:
        incident.payloads = [*incident.payloads, {"event_id": event.id, "type": event.type.value, **event.payload}]
    if aware(event.occurred_at) > aware(incident.last_event_at):
        incident.last_event_at = event.occurred_at
    incident.updated_at = now


def get_incident(*, session: Session, incident_id: str) -> Incident | None:
    return session.get(Incident, incident_id)


def list_incidents(*, session: Session, status: str | None = None, limit: int = 100) -> list[Incident]:
    stmt = select(Incident)
    if status:
        stmt = stmt.where(Incident.status == status)
    return list(session.exec(stmt.order_by(col(Incident.opened_at).desc()).limit(limit)))


def set_status(*, session: Session, incident: Incident, status: IncidentStatus, now: datetime) -> None:
    incident.status = status
    incident.updated_at = now
    session.add(incident)

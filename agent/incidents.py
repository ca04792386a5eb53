"""From exception events to incidents: idempotent by event id, related events correlated into one.

Correlation: an event joins an open incident when (a) one of its orders is already in that incident,
or (b) the incident has the same family and zone and its last event is within ``window_s`` of this
one. The storm's weather slowdown, rider shortage and hundreds of order_late_risk events in one
zone are one family, so the whole storm is ONE incident and one plan, not 278 small ones.

Late events: "open" means open/investigating/awaiting_approval/executing. An event that joins while
the incident's plan is already made (e.g. it waits for approval) is kept on the incident, and the
runtime runs a follow-up thread ``f"{incident_id}:{n}"`` for the orders it added once the current
thread ends (agent.runtime). Once the incident is resolved, failed or escalated it is never
re-opened by correlation: a related event opens a NEW incident.

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
    # what each touched incident absorbs, written back once at the end (rebuilding the JSON lists per
    # event made a 263-event storm quadratic)
    absorbed: dict[str, _Absorbed] = {}
    with session.no_autoflush:
        for event in events:
            if event.id in known:
                results.append(IngestResult(event.id, known[event.id], duplicate=True, new_incident=False))
                continue
            incident = _match(event, open_incidents, by_order, window)
            new = incident is None
            if incident is None:
                incident = _open(event, now)
            values: dict[str, Any] = {
                "event_id": event.id,
                "incident_id": incident.id,
                "type": event.type.value,
                "received_at": now,
                "occurred_at": event.occurred_at,
                "event": event.model_dump(mode="json"),  # as received: `eval export` replays it
            }
            if one_by_one:
                row = IncidentEvent(**values)
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
                batch.append(values)
            if new:
                open_incidents.append(incident)
            acc = absorbed.get(incident.id)
            if acc is None:
                acc = absorbed[incident.id] = _Absorbed(incident)
            acc.add(event)
            for oid in event.order_ids:
                by_order.setdefault(oid, incident)
            known[event.id] = incident.id
            results.append(IngestResult(event.id, incident.id, duplicate=False, new_incident=new))
    for acc in absorbed.values():
        acc.write(now)
        session.add(acc.incident)
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


class _Absorbed:
    """An incident's lists with the events absorbed so far (first-seen order, no duplicates)."""

    def __init__(self, incident: Incident) -> None:
        self.incident = incident
        self.event_ids = list(incident.event_ids)
        self.payloads = list(incident.payloads)
        self.lists = {
            name: (list(getattr(incident, name)), set(getattr(incident, name)))
            for name in ("order_ids", "rider_ids", "store_ids", "customer_ids")
        }

    def add(self, event: ExceptionEvent) -> None:
        self.event_ids.append(event.id)
        for name, new in (
            ("order_ids", event.order_ids),
            ("rider_ids", event.rider_ids),
            ("store_ids", event.store_ids),
            ("customer_ids", event.customer_ids),
        ):
            items, seen = self.lists[name]
            for x in new:
                if x not in seen:
                    seen.add(x)
                    items.append(x)
        if event.payload:
            self.payloads.append({"event_id": event.id, "type": event.type.value, **event.payload})
        # the correlation window of the next event runs from here: kept current on the incident
        if aware(event.occurred_at) > aware(self.incident.last_event_at):
            self.incident.last_event_at = event.occurred_at

    def write(self, now: datetime) -> None:
        # JSON columns only persist on reassignment: every list is assigned anew
        inc = self.incident
        inc.event_ids = self.event_ids
        inc.order_ids = self.lists["order_ids"][0]
        inc.rider_ids = self.lists["rider_ids"][0]
        inc.store_ids = self.lists["store_ids"][0]
        inc.customer_ids = self.lists["customer_ids"][0]
        inc.payloads = self.payloads
        inc.updated_at = now


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

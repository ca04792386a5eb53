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
from typing import Any, cast

from pydantic import TypeAdapter
from sqlalchemy import Select, bindparam, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from agent.models import OPEN_STATUSES, WITHOUT_PLAN, Incident, IncidentEvent, IncidentStatus
from tools.db import in_param, lock_until_commit
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
# An event joins the open incident that holds one of its orders, whatever its family. Most families'
# events are then handled by any incident's playbook (a forecast, a quote, a notice per order); these
# ask for what only their own playbook does (hand a gone rider's orders over; fix a short shelf), so
# in an incident of another family they get a plan of their own family too (IncidentBrief.also). The
# value: the incident families whose playbook covers them already.
OWN_PLAYBOOK_FAMILIES: dict[str, frozenset[str]] = {
    "rider_offline": frozenset({"rider_offline", "delivery_delay"}),  # the storm re-plans stranded orders
    "stockout_after_payment": frozenset({"stockout_after_payment"}),
}


def needs_own_playbook(event_family: str, incident_family: str) -> bool:
    covered_by = OWN_PLAYBOOK_FAMILIES.get(event_family)
    return covered_by is not None and incident_family not in covered_by


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


# pg_advisory_xact_lock key: "inta" as an int, shared by every process writing incidents' subjects
INTAKE_LOCK_KEY = 0x696E7461


def lock_intake(session: Session) -> None:
    """Serialise, until the transaction ends, the writers of incidents' subjects (intake, and an
    investigation widening its incident's scope), before they read them: two of them reading the
    same open incidents at once would each write back their own order list, and one order could open
    two incidents or drop out of one. PostgreSQL: an advisory lock; SQLite: its write lock."""
    lock_until_commit(session.connection(), INTAKE_LOCK_KEY)


def ingest_event(*, session: Session, event: ExceptionEvent, now: datetime, window_s: int) -> IngestResult:
    return ingest_events(session=session, events=[event], now=now, window_s=window_s)[0]


def ingest_events(
    *, session: Session, events: Sequence[ExceptionEvent], now: datetime, window_s: int
) -> list[IngestResult]:
    """Ingest a batch in order: one read of the open incidents and one flush for the whole batch (the
    storm is ~280 events). If a concurrent delivery took one of the ids, the batch is redone one
    event at a time, each in its own savepoint, so only that event is reported as a duplicate."""
    lock_intake(session)
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
    known: dict[str, str] = dict(session.execute(*_known_events(ids)).all())  # type: ignore[arg-type]
    open_incidents = list(session.scalars(_OPEN_INCIDENTS))
    by_order: dict[str, Incident] = {}
    for inc in open_incidents:
        for oid in inc.order_ids:
            by_order.setdefault(oid, inc)
    # when each open incident's last event happened (aware), kept here as the batch moves it: the
    # correlation window of the next event runs from there
    last_at = {inc.id: aware(inc.last_event_at) for inc in open_incidents}
    window = timedelta(seconds=window_s)
    results: list[IngestResult] = []
    batch: list[dict[str, Any]] = []  # one multi-row INSERT instead of one ORM insert per event
    batch_events: list[ExceptionEvent] = []  # their events, serialised in one call at the end
    # what each touched incident absorbs, written back once at the end (rebuilding the JSON lists per
    # event made a 263-event storm quadratic)
    absorbed: dict[str, _Absorbed] = {}
    with session.no_autoflush:
        for event in events:
            if event.id in known:
                results.append(IngestResult(event.id, known[event.id], duplicate=True, new_incident=False))
                continue
            incident = _match(event, open_incidents, by_order, window, last_at)
            new = incident is None
            if incident is None:
                incident = _open(event, now)
                last_at[incident.id] = aware(incident.last_event_at)
            acc = absorbed.get(incident.id)
            values: dict[str, Any] = {
                "event_id": event.id,
                "incident_id": incident.id,
                "seq": acc.count if acc is not None else incident.event_count,
                "type": event.type.value,
                "received_at": now,
                "occurred_at": event.occurred_at,
            }
            if one_by_one:
                row = IncidentEvent(**values, event=event.model_dump(mode="json"))
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
                batch_events.append(event)
            if new:
                open_incidents.append(incident)
            if acc is None:
                acc = absorbed[incident.id] = _Absorbed(incident, new=new)
            last_at[incident.id] = acc.add(event)
            for oid in event.order_ids:
                by_order.setdefault(oid, incident)
            known[event.id] = incident.id
            results.append(IngestResult(event.id, incident.id, duplicate=False, new_incident=new))
    for acc in absorbed.values():
        if acc.new:
            acc.write(now)
            session.add(acc.incident)
        else:
            # one UPDATE of what changed, not an ORM flush of the whole object; the in-memory object
            # leaves the session, which holds it as it was read
            session.execute(
                update(Incident.__table__).where(Incident.__table__.c.id == acc.incident.id),  # type: ignore[attr-defined]
                acc.changes(now),
            )
            session.expunge(acc.incident)
    session.flush()
    if batch:
        # each event as received (`eval export` replays it): one serialiser call for the batch
        for values, dumped in zip(batch, _EVENT_LIST.dump_python(batch_events, mode="json"), strict=True):
            values["event"] = dumped
        session.execute(insert(IncidentEvent.__table__), batch)  # type: ignore[attr-defined]
    return results


# Intake's statements, built once: an event posted on its own costs one small transaction, and
# building these each time was a fifth of it.
_KNOWN_EVENTS = sa_select(col(IncidentEvent.event_id), col(IncidentEvent.incident_id)).where(
    col(IncidentEvent.event_id).in_(bindparam("ids", expanding=True))
)

_KNOWN_EVENT_BATCH = sa_select(col(IncidentEvent.event_id), col(IncidentEvent.incident_id)).where(
    in_param(col(IncidentEvent.event_id), "ids")
)


def _known_events(ids: list[str]) -> tuple[Any, ...]:
    """The statement (and parameters) finding which of ``ids`` are stored: the prebuilt one for a few
    ids, one bound parameter for a batch (an expanding IN binds each of a storm's ~260 ids)."""
    return (_KNOWN_EVENTS if len(ids) <= 16 else _KNOWN_EVENT_BATCH), {"ids": ids}


# a batch's events serialised as each one's model_dump(mode="json"), in one call
_EVENT_LIST: TypeAdapter[list[ExceptionEvent]] = TypeAdapter(list[ExceptionEvent])
# correlation reads the incidents' subjects, never their plans and verdicts
_OPEN_INCIDENTS = (
    sa_select(Incident).where(col(Incident.status).in_([s.value for s in OPEN_STATUSES])).options(*WITHOUT_PLAN)
)


def _match(
    event: ExceptionEvent,
    open_incidents: list[Incident],
    by_order: dict[str, Incident],
    window: timedelta,
    last_at: dict[str, datetime],
) -> Incident | None:
    for oid in event.order_ids:
        if oid in by_order:
            return by_order[oid]
    family = family_of(event.type)
    if family in PER_SUBJECT_FAMILIES:
        return None
    at = aware(event.occurred_at)
    for inc in open_incidents:
        if inc.family == family and inc.zone == event.zone and abs(at - last_at[inc.id]) <= window:
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
        # the defaults given rather than left to the fields' factories: pydantic inspects a factory's
        # signature on every call, which made opening an incident ~6x dearer
        order_ids=[],
        rider_ids=[],
        store_ids=[],
        customer_ids=[],
        verdicts={},
        step_status={},
    )


_SUBJECT_LISTS = ("order_ids", "rider_ids", "store_ids", "customer_ids")


class _Absorbed:
    """An incident's subject lists with the events absorbed so far (first-seen order, no duplicates)."""

    def __init__(self, incident: Incident, *, new: bool) -> None:
        self.incident = incident
        self.new = new  # opened by this batch (inserted), or already stored (updated)
        self.count = incident.event_count
        self.lists = {name: (list(getattr(incident, name)), set(getattr(incident, name))) for name in _SUBJECT_LISTS}
        self.grown: set[str] = set()
        # the latest event time, as given and aware: kept here and written to the incident once (an
        # attribute set on a table model costs as much as the rest of an event's intake)
        self.last_event_at = incident.last_event_at
        self._last = aware(incident.last_event_at)

    def add(self, event: ExceptionEvent) -> datetime:
        """Absorb the event; returns the incident's last event time (aware) after it."""
        self.count += 1
        for name in _SUBJECT_LISTS:  # the event names its subjects under the same names
            items, seen = self.lists[name]
            for x in getattr(event, name):
                if x not in seen:
                    seen.add(x)
                    items.append(x)
                    self.grown.add(name)
        at = aware(event.occurred_at)
        if at > self._last:
            self._last = at
            self.last_event_at = event.occurred_at
        return self._last

    def changes(self, now: datetime) -> dict[str, Any]:
        """The columns this batch changed: grown lists (new list objects), count, times."""
        out: dict[str, Any] = {name: self.lists[name][0] for name in self.grown}
        out.update(event_count=self.count, last_event_at=self.last_event_at, updated_at=now)
        return out

    def write(self, now: datetime) -> None:
        """The changes onto the ORM object (an incident this batch opened; JSON columns only persist
        on reassignment, and ``changes`` gives every grown list anew)."""
        for name, value in self.changes(now).items():
            setattr(self.incident, name, value)


def _events_in_order(incident_id: str, *columns: Any) -> Select[Any]:
    """SELECT ``columns`` of the incident's events, in the order they joined it."""
    return (
        sa_select(*columns)
        .where(col(IncidentEvent.incident_id) == incident_id)
        .order_by(col(IncidentEvent.seq), col(IncidentEvent.event_id))
    )


def incident_event_ids(*, session: Session, incident_id: str) -> list[str]:
    """The incident's event ids in the order they joined it."""
    return list(session.scalars(_events_in_order(incident_id, col(IncidentEvent.event_id))))


def event_types(*, session: Session, incident_id: str) -> list[str]:
    """The distinct exception types of the incident's events."""
    stmt = sa_select(col(IncidentEvent.type)).where(col(IncidentEvent.incident_id) == incident_id).distinct()
    return [str(t) for t in session.scalars(stmt)]


def incident_payloads(*, session: Session, incident_id: str) -> list[dict[str, Any]]:
    """The payloads of the incident's events in the order they joined it, each with its event's id
    and type (what planners and the investigation read: a rider's last position, a complaint's text)."""
    return read_events(session=session, incident_id=incident_id, family="")[0]


@dataclass
class JoinedGroup:
    """The events of one family that needs its own playbook (``needs_own_playbook``) in an incident
    of another family: their type, subjects and payloads, for a planner brief of that family."""

    family: str
    type: str
    order_ids: list[str]
    rider_ids: list[str]
    store_ids: list[str]
    customer_ids: list[str]
    payloads: list[dict[str, Any]]


def read_events(
    *, session: Session, incident_id: str, family: str, since_seq: int = 0
) -> tuple[list[dict[str, Any]], list[JoinedGroup]]:
    """One pass over the incident's events: every payload (as ``incident_payloads``), and the
    ``JoinedGroup`` of each family needing its own playbook in an incident of ``family``, from the
    events at or after ``since_seq`` (a follow-up plans the events that joined after its last plan)."""
    rows = session.execute(
        _events_in_order(
            incident_id,
            col(IncidentEvent.event_id),
            col(IncidentEvent.type),
            col(IncidentEvent.event),
            col(IncidentEvent.seq),
        )
    ).all()
    payloads: list[dict[str, Any]] = []
    groups: dict[str, JoinedGroup] = {}
    for event_id, type_, event, seq_ in rows:
        seq, type_ = cast(int, seq_), str(type_)
        body = cast(dict[str, Any], event or {})
        payload: dict[str, Any] = body.get("payload") or {}
        item = {"event_id": event_id, "type": type_, **payload} if payload else None
        if item is not None:
            payloads.append(item)
        fam = FAMILIES.get(cast(ExceptionType, type_), type_)  # a StrEnum key matches its text
        if not family or seq < since_seq or not needs_own_playbook(fam, family):
            continue
        group = groups.get(fam)
        if group is None:
            group = groups[fam] = JoinedGroup(fam, type_, [], [], [], [], [])
        for name in _SUBJECT_LISTS:
            have = getattr(group, name)
            have.extend(x for x in body.get(name) or [] if x not in have)
        if item is not None:
            group.payloads.append(item)
    return payloads, list(groups.values())


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

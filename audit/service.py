"""Write and read decision records. ``append_record`` is the one helper every flow calls.

Appends are serialised so that seq and prev_hash never fork: on PostgreSQL by a transaction-scoped
advisory lock, on SQLite by taking the database write lock (a write to the chain head) before reading
the tail. The unique seq constraint backs both up. Functions do not commit: the caller does.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Text, bindparam, or_, text, type_coerce
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from audit.chain import GENESIS, quantize, record_hash
from audit.models import (
    JSON_FIELDS,
    SCALAR_FIELDS,
    SCHEMA_VERSION,
    CanonicalText,
    ChainHead,
    DecisionRecord,
    RecordIn,
    RecordSubject,
    RecordSubjectAlias,
    Snapshot,
    json_text,
)
from tools.models import aware

# pg_advisory_xact_lock key: "audit" as an int, shared by every process appending to this database
AUDIT_LOCK_KEY = 0x61756469


def _insert(session: Session, table: Any) -> Any:
    return (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)


def store_snapshot(*, session: Session, content: dict[str, Any], now: datetime | None = None) -> str:
    """Store the content once under its sha256 and return the hash."""
    return store_snapshot_text(session=session, body=json_text(content), now=now)


def store_snapshot_text(*, session: Session, body: str, now: datetime | None = None) -> str:
    """Store ``body``, a content's canonical text (``json_text``), once under its sha256; the hash."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    stmt = (
        _insert(session, Snapshot.__table__)  # type: ignore[attr-defined]
        .values(sha256=digest, content=CanonicalText(body), created_at=aware(now or datetime.now(UTC)).astimezone(UTC))
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    session.execute(stmt)
    return digest


class SnapshotIntegrityError(Exception):
    """A stored snapshot whose content no longer hashes to its key: the facts were altered."""


def get_snapshot_text(*, session: Session, sha256: str) -> str | None:
    """The snapshot's content exactly as stored (canonical JSON text), None if there is none.
    Raises SnapshotIntegrityError when that text does not hash to ``sha256``."""
    content = Snapshot.__table__.c.content  # type: ignore[attr-defined]
    stmt = select(type_coerce(content, Text)).where(Snapshot.__table__.c.sha256 == sha256)  # type: ignore[attr-defined]
    stored = session.exec(stmt).first()
    if stored is None:
        return None
    raw = stored if isinstance(stored, bytes) else str(stored).encode()
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise SnapshotIntegrityError(f"snapshot {sha256} does not match its sha256: its content was modified")
    return raw.decode()


def get_snapshot(*, session: Session, sha256: str) -> dict[str, Any] | None:
    """The snapshot's content, checked against its hash first: nothing plans from altered facts
    (raises SnapshotIntegrityError)."""
    body = get_snapshot_text(session=session, sha256=sha256)
    return None if body is None else orjson.loads(body)  # type: ignore[no-any-return]


# The append's statements, built once (a storm appends five records, each five statements; building
# them and their cache keys each time cost more than running them). The chain head's seed is an
# INSERT ... ON CONFLICT DO NOTHING in each dialect's own form.
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_TAIL = text(
    "SELECT d.seq, d.record_hash, d.subjects, a.same_as FROM decisionrecord d"
    " LEFT JOIN recordsubjectalias a ON a.seq = d.seq ORDER BY d.seq DESC LIMIT 1"
)
_RECORD_INSERT = DecisionRecord.__table__.insert()  # type: ignore[attr-defined]
_ALIAS_INSERT = RecordSubjectAlias.__table__.insert()  # type: ignore[attr-defined]
_HEAD = ChainHead.__table__  # type: ignore[attr-defined]
_HEAD_UPDATE = _HEAD.update().where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), record_hash=bindparam("new_hash"))
_HEAD_SEED = {
    name: insert(_HEAD).values(id=1, seq=0, record_hash=GENESIS).on_conflict_do_nothing(index_elements=["id"])
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def _lock_chain(session: Session) -> None:
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(_ADVISORY_LOCK, {"k": AUDIT_LOCK_KEY})
    # on SQLite this first write takes the database write lock for the rest of the transaction
    session.execute(_HEAD_SEED["postgresql" if postgres else "sqlite"])


def append_record(*, session: Session, record: RecordIn, texts: Mapping[str, str] | None = None) -> DecisionRecord:
    """Append one record to the chain (seq = last + 1, prev_hash = last record_hash). ``texts``: the
    canonical text (``json_text``) of JSON fields the caller has serialised already, each exactly
    ``json_text`` of the record's value (a plan's steps, whose text is also part of its digest)."""
    _lock_chain(session)
    tail = session.execute(_TAIL).first()
    seq, prev = (int(tail[0]) + 1, str(tail[1])) if tail else (1, GENESIS)
    # microseconds are the stored precision on both backends
    recorded_at = aware(record.recorded_at or datetime.now(UTC)).astimezone(UTC)
    snapshot_sha = (
        store_snapshot(session=session, content=record.snapshot, now=recorded_at)
        if record.snapshot is not None
        else None
    )
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "schema_version": SCHEMA_VERSION,
        "seq": seq,
        "recorded_at": recorded_at,
        "stage": record.stage,
        "incident_id": record.incident_id,
        "thread_id": record.thread_id,
        "snapshot_sha256": snapshot_sha,
        "planner": record.planner,
        "model_provider": record.model_provider,
        "model_name": record.model_name,
        "model_version": record.model_version,
        "prompt_version": record.prompt_version,
        "policy_version": record.policy_version,
        "confidence": quantize(record.confidence),
        "approver_id": record.approver_id,
        "approver_role": record.approver_role,
        "reason": record.reason,
        "prev_hash": prev,
    }
    json_values: dict[str, Any] = {
        "subjects": record.subjects.model_dump(),
        "steps": record.steps,
        "verdicts": record.verdicts,
        "result": record.result,
        "explanation": record.explanation,
        "attributes": record.attributes,
    }
    # each JSON field is serialised once: the hash covers exactly the text that is stored
    given = texts or {}
    texts = {k: given[k] if k in given else json_text(json_values[k]) for k in JSON_FIELDS}
    digest = record_hash({**values, **texts})
    canonical: dict[str, Any] = {k: CanonicalText(t) for k, t in texts.items()}
    # a Core insert (the ORM's unit of work for one object cost more than the hashing); the record
    # returned is not attached to the session and holds the caller's data, not its text
    session.execute(_RECORD_INSERT, {**values, **canonical, "record_hash": digest})
    row = DecisionRecord(**values, **json_values, record_hash=digest)
    if tail is not None and tail[2] is not None and str(tail[2]) == texts["subjects"]:
        # the same subjects as the record before (the stored canonical texts are equal): its rows serve
        session.execute(_ALIAS_INSERT, {"seq": seq, "same_as": int(tail[3] or tail[0])})
    else:
        _index_subjects(session, seq, record.subjects)
    session.execute(_HEAD_UPDATE, {"new_seq": seq, "new_hash": digest})
    return row


def _index_subjects(session: Session, seq: int, subjects: Any) -> None:
    """The record's row per order, rider and customer it names. A storm's records name ~280 orders
    each: one driver-level executemany, without SQLAlchemy's per-row parameter processing (which
    cost more than the rest of the append together)."""
    rows = [
        (seq, kind, sid)
        for kind, ids in (("order", subjects.orders), ("rider", subjects.riders), ("customer", subjects.customers))
        for sid in dict.fromkeys(ids)
    ]
    if not rows:
        return
    mark = "?" if session.get_bind().dialect.paramstyle == "qmark" else "%s"
    session.connection().exec_driver_sql(
        f"INSERT INTO {RecordSubject.__tablename__} (seq, kind, subject_id) VALUES ({mark}, {mark}, {mark})", rows
    )


def list_records(
    *,
    session: Session,
    incident_id: str | None = None,
    order_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    stage: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[DecisionRecord]:
    """Records in chain order, filtered by incident, order touched, approver and time window."""
    stmt = select(DecisionRecord)
    if incident_id is not None:
        stmt = stmt.where(DecisionRecord.incident_id == incident_id)
    if order_id is not None:
        seqs = select(RecordSubject.seq).where(RecordSubject.kind == "order", RecordSubject.subject_id == order_id)
        aliased = select(RecordSubjectAlias.seq).where(col(RecordSubjectAlias.same_as).in_(seqs))
        stmt = stmt.where(or_(col(DecisionRecord.seq).in_(seqs), col(DecisionRecord.seq).in_(aliased)))
    if actor is not None:
        stmt = stmt.where(DecisionRecord.approver_id == actor)
    if since is not None:
        stmt = stmt.where(col(DecisionRecord.recorded_at) >= aware(since).astimezone(UTC))
    if until is not None:
        stmt = stmt.where(col(DecisionRecord.recorded_at) < aware(until).astimezone(UTC))
    if stage is not None:
        stmt = stmt.where(DecisionRecord.stage == stage)
    stmt = stmt.order_by(col(DecisionRecord.seq)).offset(offset).limit(limit)
    return list(session.exec(stmt))


def proposal_subjects(*, session: Session, incident_id: str) -> list[Any]:
    """The subjects of an incident's proposal records, in chain order (the orders each plan saw),
    without loading the plans themselves."""
    stmt = (
        select(DecisionRecord.subjects)
        .where(DecisionRecord.incident_id == incident_id, DecisionRecord.stage == "proposal")
        .order_by(col(DecisionRecord.seq))
    )
    return list(session.exec(stmt))


class SyntheticChain(NamedTuple):
    """Rows for the verification benchmark, in driver form (JSON as canonical text, times in
    RecordTime's SQLite form)."""

    records: list[tuple[Any, ...]]  # SYNTHETIC_COLUMNS order
    subjects: list[tuple[int, str, str]]  # (seq, kind, subject_id)
    snapshots: list[tuple[str, str, str]]  # (sha256, content, created_at)
    head: str

    def inserts(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        return [
            (SYNTHETIC_INSERT, self.records),
            ("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (?, ?, ?)", self.subjects),
            ("INSERT INTO snapshot (sha256, content, created_at) VALUES (?, ?, ?)", self.snapshots),
            ("INSERT INTO chainhead (id, seq, record_hash) VALUES (1, ?, ?)", [(len(self.records), self.head)]),
        ]


def synthetic_chain(n: int, *, start: datetime | None = None) -> SyntheticChain:
    """``n`` chained records shaped like an incident's: every 20th an investigation naming its
    snapshot, each record indexed under one order and one rider."""
    base = start or datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS
    out = SyntheticChain([], [], [], GENESIS)
    stages = ("proposal", "verdict", "decision", "execution")
    for i in range(1, n + 1):
        at = base + timedelta(milliseconds=i)
        stored_at = at.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")  # RecordTime's SQLite form
        order, rider = f"o{i % 997}", f"r{i % 101}"
        result: dict[str, Any] = {"ok": True}
        if i % 20 == 1:
            snapshot = json_text({"orders": {order: {"status": "assigned", "value_cents": 1200 + i}}})
            result = {"snapshot_sha": hashlib.sha256(snapshot.encode()).hexdigest(), "events": 1}
            out.snapshots.append((result["snapshot_sha"], snapshot, stored_at))
        values: dict[str, Any] = {
            "id": f"00000000-0000-4000-8000-{i:012d}",
            "schema_version": SCHEMA_VERSION,
            "seq": i,
            "recorded_at": at,
            "stage": "investigation" if i % 20 == 1 else stages[i % 4],
            "incident_id": f"inc-{i // 20}",
            "thread_id": f"thr-{i // 20}",
            "snapshot_sha256": None,
            "planner": "playbook",
            "model_provider": "orderagent",
            "model_name": "playbook",
            "model_version": "1",
            "prompt_version": None,
            "policy_version": "2026.11.1",
            "confidence": 0.9,
            "approver_id": "sup-1" if i % 4 == 2 else None,
            "approver_role": "supervisor" if i % 4 == 2 else None,
            "reason": None,
            "prev_hash": prev,
            "subjects": json_text({"orders": [order], "riders": [rider], "customers": []}),
            "steps": json_text([{"index": 0, "tool": "issue_compensation", "args": {"order_id": order}}]),
            "verdicts": json_text({"0": {"decision": "allow"}}),
            "result": json_text(result),
            "explanation": json_text(None),
            "attributes": json_text({"gen_ai.operation.name": "plan", "gen_ai.request.model": "playbook"}),
        }
        prev = record_hash(values)
        values["recorded_at"] = stored_at
        out.records.append((*(values[c] for c in SYNTHETIC_COLUMNS[:-1]), prev))
        out.subjects.extend([(i, "order", order), (i, "rider", rider)])
    return out._replace(head=prev)


SYNTHETIC_COLUMNS: tuple[str, ...] = (*SCALAR_FIELDS, *JSON_FIELDS, "record_hash")
SYNTHETIC_INSERT = (
    f"INSERT INTO decisionrecord ({', '.join(SYNTHETIC_COLUMNS)}) VALUES ({', '.join('?' for _ in SYNTHETIC_COLUMNS)})"
)

"""The hash chain over decision records, and its verification.

record_hash = sha256 of the canonical JSON object (sorted keys, no spaces, UTF-8) of every hashed
field, including ``seq`` and ``prev_hash``; prev_hash is the previous record's hash (64 zeros for the
first). JSON fields enter the object as their stored canonical text (a JSON string), recorded_at as ISO
8601 UTC text with microseconds. So verification hashes what is stored without parsing anything: the
database returns the columns already in sorted-field order and each row is one C-level dict + dump +
sha256, well above 100,000 records/s.

Changing a record breaks its own hash; deleting, inserting or reordering records breaks the seq run or
the prev_hash links; deleting or appending at the tail disagrees with the chain head.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import text
from sqlmodel import Session

from audit.models import JSON_FIELDS, SCALAR_FIELDS, json_text

GENESIS = "0" * 64
HASHED_FIELDS: tuple[str, ...] = tuple(sorted(SCALAR_FIELDS + JSON_FIELDS))

__all__ = ["GENESIS", "HASHED_FIELDS", "ChainReport", "bench_verify", "json_text", "record_hash", "verify_chain"]


class ChainReport(BaseModel):
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    seconds: float = 0.0


def ts_text(value: datetime | str) -> str:
    """One text form of a timestamp, whatever the backend returned: ISO 8601, microseconds, +00:00."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(values: dict[str, Any]) -> str:
    """The hash of one record from its field values (JSON fields given as their stored text)."""
    doc = {name: values[name] for name in HASHED_FIELDS}
    doc["recorded_at"] = ts_text(doc["recorded_at"])
    return hashlib.sha256(orjson.dumps(doc)).hexdigest()


_SEQ_I = HASHED_FIELDS.index("seq")
_PREV_I = HASHED_FIELDS.index("prev_hash")
_HASH_I = len(HASHED_FIELDS)
# recorded_at rendered by the database in ts_text's form, so rows need no conversion in Python
_TS_SQL = {
    "sqlite": "replace(recorded_at, ' ', 'T') || '+00:00'",
    "postgresql": "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
}


def _select(dialect: str) -> str:
    cols = [_TS_SQL[dialect] if name == "recorded_at" else name for name in HASHED_FIELDS]
    return f"SELECT {', '.join(cols)}, record_hash FROM decisionrecord ORDER BY seq"


def _stream(session: Session, batch: int) -> Iterator[list[tuple[Any, ...]]]:
    """Batches of raw rows straight from the driver (a server-side cursor on PostgreSQL)."""
    conn = session.connection()
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if conn.dialect.name == "postgresql":
        cur = dbapi.cursor(name=f"audit_verify_{id(session)}")  # type: ignore[call-arg]
        cur.itersize = batch
    else:
        cur = dbapi.cursor()
    try:
        cur.execute(_select(conn.dialect.name))
        while rows := cur.fetchmany(batch):
            yield rows
    finally:
        cur.close()


def verify_chain(*, session: Session, batch: int = 5000) -> ChainReport:
    """Walk the records in seq order; report the first record that breaks the chain."""
    start = time.perf_counter()
    expected_seq, prev, count = 1, GENESIS, 0

    def report(ok: bool, bad: int | None = None, problem: str | None = None) -> ChainReport:
        return ChainReport(
            ok=ok,
            records=count,
            first_bad_seq=bad,
            problem=problem,
            head_hash=prev,
            seconds=time.perf_counter() - start,
        )

    names, dumps, sha = HASHED_FIELDS, orjson.dumps, hashlib.sha256
    for rows in _stream(session, batch):
        for row in rows:
            seq = row[_SEQ_I]
            if seq != expected_seq:
                problem = (
                    f"seq {seq} follows seq {expected_seq - 1}: a record was deleted or inserted"
                    if seq > expected_seq
                    else f"seq {seq} repeats or runs backwards"
                )
                return report(False, seq, problem)
            if row[_PREV_I] != prev:
                return report(False, seq, f"record {seq}: prev_hash does not match record {seq - 1}'s hash")
            # columns arrive in sorted-field order, so the dict is already canonical
            if sha(dumps(dict(zip(names, row, strict=False)))).hexdigest() != row[_HASH_I]:
                return report(False, seq, f"record {seq}: content does not match its record_hash (modified)")
            prev = row[_HASH_I]
            expected_seq += 1
            count += 1
    head = session.execute(text("SELECT seq, record_hash FROM chainhead WHERE id = 1")).first()
    if head is not None and (head[0] != count or head[1] != prev):
        return report(
            False,
            count + 1 if head[0] > count else head[0] + 1,
            f"chain head says {head[0]} records ending in {head[1][:12]}, found {count} ending in"
            f" {prev[:12]}: records were removed from or added at the end",
        )
    return report(True)


def bench_verify(n: int = 100_000) -> dict[str, Any]:
    """Build ``n`` synthetic records in an in-memory SQLite and time ``verify_chain`` over them."""
    from sqlmodel import SQLModel

    from audit.models import ChainHead, DecisionRecord
    from audit.service import SYNTHETIC_INSERT, synthetic_rows
    from tools.db import make_engine

    engine = make_engine("sqlite://")
    tables = [DecisionRecord.__table__, ChainHead.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.create_all(engine, tables=tables)
    t0 = time.perf_counter()
    with Session(engine) as session:
        rows, head_hash = synthetic_rows(n)
        conn = session.connection()
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cur.executemany(SYNTHETIC_INSERT, rows)
        cur.execute("INSERT INTO chainhead (id, seq, record_hash) VALUES (1, ?, ?)", (n, head_hash))
        cur.close()
        session.commit()
        build_s = time.perf_counter() - t0
        rep = verify_chain(session=session)
    engine.dispose()
    return {
        "records": rep.records,
        "ok": rep.ok,
        "build_s": round(build_s, 3),
        "verify_s": round(rep.seconds, 4),
        "records_per_s": round(rep.records / rep.seconds) if rep.seconds else 0,
    }

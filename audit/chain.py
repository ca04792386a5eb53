"""The hash chain over decision records, and its verification.

record_hash = sha256 of the canonical JSON document of a record (keys sorted, no spaces, UTF-8):

    {"body": {<the JSON fields: attributes, explanation, result, steps, subjects, verdicts>},
     "head": {<every other field but record_hash, including seq and prev_hash>}}

prev_hash is the previous record's hash (64 zeros for the first). In ``head``: text as JSON strings
(NULL as null), schema_version and seq as integers, recorded_at as ISO 8601 UTC text with
microseconds, and confidence as integer millionths under ``confidence_ppm`` (stored confidence is
quantised to millionths, so no float formatting is involved). ``body`` embeds the JSON fields as they
are stored: canonical text already.

``record_hash`` builds the document in Python at append time. To verify, the database renders the
same document itself (SQLite json_object / PostgreSQL to_json escape text byte-for-byte as orjson
does; tests/audit/test_chain.py checks awkward text on both), so each row reaches Python as one
bytes value and costs one sha256: about 100,000 records/s on one core (``orderagent audit bench``).

Changing a record breaks its hash; deleting, inserting or reordering records breaks the seq run or
the prev_hash links; removing or adding records at the tail disagrees with the chain head.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import text
from sqlmodel import Session

from audit.models import JSON_FIELDS, SCALAR_FIELDS, json_text

GENESIS = "0" * 64
INT_FIELDS = frozenset({"schema_version", "seq"})
# document keys: confidence travels as integer millionths; both groups in sorted key order
_HEAD_KEY = {name: ("confidence_ppm" if name == "confidence" else name) for name in SCALAR_FIELDS}
HEAD_FIELDS: tuple[str, ...] = tuple(sorted(SCALAR_FIELDS, key=_HEAD_KEY.__getitem__))
BODY_FIELDS: tuple[str, ...] = tuple(sorted(JSON_FIELDS))

__all__ = ["GENESIS", "ChainReport", "document", "bench_verify", "json_text", "quantize", "record_hash", "verify_chain"]


class ChainReport(BaseModel):
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # this process's CPU time (meaningful on a busy machine)


def ts_text(value: datetime | str) -> str:
    """One text form of a timestamp: ISO 8601, UTC, microseconds, +00:00."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def quantize(confidence: float | None) -> float | None:
    """Confidence as stored: rounded to millionths, so the document can carry it as an integer."""
    return None if confidence is None else round(float(confidence) * 1_000_000) / 1_000_000


def document(values: dict[str, Any]) -> bytes:
    """The canonical document of one record (JSON fields given as their stored canonical text)."""
    head: dict[str, Any] = {}
    for name in HEAD_FIELDS:
        v = values[name]
        if name == "recorded_at":
            v = ts_text(v)
        elif name == "confidence" and v is not None:
            v = round(v * 1_000_000)
        head[_HEAD_KEY[name]] = v
    body = {name: orjson.Fragment(values[name] if values[name] is not None else "null") for name in BODY_FIELDS}
    return orjson.dumps({"body": body, "head": head})


def record_hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(document(values)).hexdigest()


_PPM = {
    "sqlite": "CAST(round(confidence * 1000000) AS INTEGER)",
    "postgresql": "CAST(round(confidence * 1000000) AS BIGINT)",
}


def _body_template() -> str:
    # JSON fields are stored canonical: embedded as they are
    return '{"body":{' + ",".join(f'"{name}":%s' for name in BODY_FIELDS) + '},"head":'


def _body_args() -> list[str]:
    # no COALESCE: a NULL renders as nothing, which can never match the hash of the stored 'null'
    return list(BODY_FIELDS)


def document_sql(dialect: str) -> str:
    """SQL rendering ``document`` for every row in seq order: (seq, prev_hash, record_hash, doc).
    One printf/format call per row; SQLite's json_object and PostgreSQL's to_json escape strings
    byte-for-byte as orjson does (tests/audit/test_chain.py checks awkward text on both)."""
    if dialect == "sqlite":
        pairs = ", ".join(
            f"'{_HEAD_KEY[n]}', " + (_PPM["sqlite"] if n == "confidence" else n) for n in HEAD_FIELDS
        )  # RecordTime stores recorded_at in the document's form already
        doc = f"printf('{_body_template()}%s}}', {', '.join(_body_args())}, json_object({pairs}))"
    elif dialect == "postgresql":
        head_t, head_a = [], []
        for n in HEAD_FIELDS:
            if n == "recorded_at":
                head_t.append('"recorded_at":"%s"')
                head_a.append("to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')")
            elif n in INT_FIELDS:
                head_t.append(f'"{n}":%s')
                head_a.append(f"CAST({n} AS TEXT)")
            elif n == "confidence":
                head_t.append('"confidence_ppm":%s')
                head_a.append(f"COALESCE(CAST({_PPM['postgresql']} AS TEXT), 'null')")
            else:
                head_t.append(f'"{n}":%s')
                head_a.append(f"COALESCE(CAST(to_json({n}) AS TEXT), 'null')")
        template = _body_template() + "{" + ",".join(head_t) + "}}"
        doc = f"format('{template}', {', '.join(_body_args() + head_a)})"
    else:  # pragma: no cover - only the two supported backends
        raise ValueError(f"unsupported database {dialect!r}")
    if dialect == "sqlite":  # as bytes: what is hashed, without a decode/encode round trip in Python
        doc = f"CAST({doc} AS BLOB)"
    return f"SELECT seq, prev_hash, record_hash, {doc} FROM decisionrecord ORDER BY seq"


def _stream(session: Session, batch: int) -> Iterator[Sequence[Any]]:
    """Batches of (seq, prev_hash, record_hash, document) straight from the driver, without ORM
    or type processing (PostgreSQL streams through a server-side cursor)."""
    conn = session.connection()
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if conn.dialect.name == "postgresql":
        cur = dbapi.cursor(name=f"audit_verify_{id(session)}")  # type: ignore[call-arg]
        cur.itersize = batch  # type: ignore[attr-defined]
    else:
        cur = dbapi.cursor()
    try:
        cur.execute(document_sql(conn.dialect.name))
        while rows := cur.fetchmany(batch):
            yield rows
    finally:
        cur.close()


def verify_chain(*, session: Session, batch: int = 5000) -> ChainReport:
    """Walk the records in seq order; report the first record that breaks the chain."""
    start, cpu_start = time.perf_counter(), time.process_time()
    expected_seq, prev, count = 1, GENESIS, 0

    def report(ok: bool, bad: int | None = None, problem: str | None = None) -> ChainReport:
        return ChainReport(
            ok=ok,
            records=count,
            first_bad_seq=bad,
            problem=problem,
            head_hash=prev,
            seconds=time.perf_counter() - start,
            cpu_seconds=time.process_time() - cpu_start,
        )

    sha = hashlib.sha256
    for rows in _stream(session, batch):
        for seq, prev_hash, stored_hash, doc in rows:
            if seq != expected_seq:
                problem = (
                    f"seq {seq} follows seq {expected_seq - 1}: a record was deleted or inserted"
                    if seq > expected_seq
                    else f"seq {seq} repeats or runs backwards"
                )
                return report(False, seq, problem)
            if prev_hash != prev:
                return report(False, seq, f"record {seq}: prev_hash does not match record {seq - 1}'s hash")
            if sha(doc if type(doc) is bytes else doc.encode()).hexdigest() != stored_hash:
                return report(False, seq, f"record {seq}: content does not match its record_hash (modified)")
            prev = stored_hash
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


def bench_verify(n: int = 100_000, repeats: int = 3) -> dict[str, Any]:
    """Build ``n`` synthetic records in an in-memory SQLite and time ``verify_chain`` over them
    ``repeats`` times: the best run approximates an idle core, the median a busy machine."""
    import statistics

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
        reports = [verify_chain(session=session) for _ in range(max(1, repeats))]
    engine.dispose()
    walls = sorted(r.seconds for r in reports)
    return {
        "records": reports[0].records,
        "ok": all(r.ok for r in reports),
        "repeats": len(reports),
        "build_s": round(build_s, 3),
        "verify_best_s": round(walls[0], 4),
        "records_per_s": round(n / walls[0]) if walls[0] else 0,  # best run
        "records_per_s_median": round(n / statistics.median(walls)) if walls[0] else 0,
        "records_per_cpu_s": round(n / min(r.cpu_seconds for r in reports)) if reports[0].cpu_seconds else 0,
    }

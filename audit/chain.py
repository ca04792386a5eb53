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
bytes value and costs one sha256.

Changing a record breaks its hash; deleting, inserting or reordering records breaks the seq run or
the prev_hash links; removing or adding records at the tail disagrees with the chain head (and a
missing head row, while records exist, is itself a break). Verification also holds what records
point to against them: each record's subject index rows against its hashed ``subjects``, and every
snapshot's content against its sha256 key, which the records name. All of it is read in one
consistent view of the database, so an append committing meanwhile is no alarm. About 120,000
records/s on one core with an index row per order and rider (``orderagent audit bench``).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from audit.models import JSON_FIELDS, SCALAR_FIELDS, json_text

GENESIS = "0" * 64
INT_FIELDS = frozenset({"schema_version", "seq"})
# document keys: confidence travels as integer millionths; both groups in sorted key order
_HEAD_KEY = {name: ("confidence_ppm" if name == "confidence" else name) for name in SCALAR_FIELDS}
HEAD_FIELDS: tuple[str, ...] = tuple(sorted(SCALAR_FIELDS, key=_HEAD_KEY.__getitem__))
BODY_FIELDS: tuple[str, ...] = tuple(sorted(JSON_FIELDS))

__all__ = ["GENESIS", "ChainReport", "document", "json_text", "quantize", "record_hash", "verify_chain"]


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


# confidence as integer millionths. A stored confidence that is not exactly its quantised value (a
# nudge smaller than half a millionth, which the rounding alone would hide) renders as a string that
# no hashed document holds, so its record fails like any other modified record.
_PPM = {
    "sqlite": (
        "CASE WHEN confidence = CAST(round(confidence * 1000000) AS INTEGER) / 1000000.0"
        " THEN CAST(round(confidence * 1000000) AS INTEGER)"
        " WHEN confidence IS NOT NULL THEN 'unquantised' END"
    ),
    "postgresql": (
        "CASE WHEN confidence = round(confidence * 1000000) / CAST(1000000 AS float8)"
        " THEN CAST(CAST(round(confidence * 1000000) AS BIGINT) AS TEXT)"
        " WHEN confidence IS NOT NULL THEN '\"unquantised\"' ELSE 'null' END"
    ),
}


def _body_template() -> str:
    # JSON fields are stored canonical: embedded as they are
    return '{"body":{' + ",".join(f'"{name}":%s' for name in BODY_FIELDS) + '},"head":'


def _body_args() -> list[str]:
    # no COALESCE: a NULL renders as nothing, which can never match the hash of the stored 'null'
    return list(BODY_FIELDS)


def document_sql(dialect: str, *, guarded: bool = False) -> str:
    """SQL rendering ``document`` for every row in seq order: (seq, prev_hash, record_hash, doc).
    One printf/format call per row; SQLite's json_object and PostgreSQL's to_json escape strings
    byte-for-byte as orjson does (tests/audit/test_chain.py checks awkward text on both).

    ``guarded`` (SQLite): json_object refuses a BLOB and fails the whole query, so the rerun after
    such a failure renders NULL instead for any row holding a BLOB, and the walk names that record."""
    if dialect == "sqlite":
        pairs = ", ".join(
            f"'{_HEAD_KEY[n]}', " + (_PPM["sqlite"] if n == "confidence" else n) for n in HEAD_FIELDS
        )  # RecordTime stores recorded_at in the document's form already
        doc = f"printf('{_body_template()}%s}}', {', '.join(_body_args())}, json_object({pairs}))"
        if guarded:
            blob = " OR ".join(f"typeof({n}) = 'blob'" for n in (*SCALAR_FIELDS, *BODY_FIELDS))
            doc = f"CASE WHEN {blob} THEN NULL ELSE {doc} END"
        # as bytes: what is hashed, without a decode/encode round trip in Python
        doc = f"CAST({doc} AS BLOB)"
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
                head_a.append(_PPM["postgresql"])
            else:
                head_t.append(f'"{n}":%s')
                head_a.append(f"COALESCE(CAST(to_json({n}) AS TEXT), 'null')")
        template = _body_template() + "{" + ",".join(head_t) + "}}"
        doc = f"format('{template}', {', '.join(_body_args() + head_a)})"
    else:  # pragma: no cover - only the two supported backends
        raise ValueError(f"unsupported database {dialect!r}")
    return f"SELECT seq, prev_hash, record_hash, {doc} FROM decisionrecord ORDER BY seq"


# The subject index. A record's rows, rendered in insertion order as its ``subjects`` JSON is stored,
# equal that JSON whenever the two agree (subject lists are deduplicated when recorded, as the index
# is): one text comparison per record, in the database. Where they differ, the rows are compared with
# the JSON as sets in Python, so a mere difference of order raises no alarm.
SUBJECT_KINDS = {"customers": "customer", "orders": "order", "riders": "rider"}  # JSON key -> kind, sorted


def _index_render(dialect: str, *, guarded: bool = False) -> str:
    if dialect == "sqlite":
        # json_group_array escapes as json_object does; it refuses a BLOB, so the rerun after that
        # failure (``guarded``) renders one as null, which no stored subjects list holds
        item = "iif(typeof(r.subject_id) = 'blob', NULL, r.subject_id)" if guarded else "r.subject_id"
        pairs = ", ".join(
            f"'{key}', json_group_array({item}) FILTER (WHERE r.kind = '{kind}')" for key, kind in SUBJECT_KINDS.items()
        )
        return f"json_object({pairs})"
    parts = [
        f"'{'{' if i == 0 else '],'}\"{key}\":[' || COALESCE(string_agg(CAST(to_json(r.subject_id) AS TEXT), ','"
        f" ORDER BY r.id) FILTER (WHERE r.kind = '{kind}'), '')"
        for i, (key, kind) in enumerate(SUBJECT_KINDS.items())
    ]
    return " || ".join(parts) + " || ']}'"


# Where a record's index rows are: under its own seq, or under the earlier record its alias names
# (audit.models.RecordSubjectAlias; an alias to itself or to a later record counts as none)
INDEX_SEQ = "COALESCE((SELECT a.same_as FROM recordsubjectalias a WHERE a.seq = d.seq AND a.same_as < d.seq), d.seq)"


def subjects_sql(dialect: str, *, guarded: bool = False) -> str:
    """Records up to seq :n whose subject index rows, rendered as JSON, differ from their subjects
    (with the index seq where those rows are)."""
    differs = "IS NOT" if dialect == "sqlite" else "IS DISTINCT FROM"
    return (
        f"SELECT d.seq, d.subjects, {INDEX_SEQ} FROM decisionrecord d WHERE d.seq <= :n AND d.subjects {differs}"
        f" (SELECT {_index_render(dialect, guarded=guarded)} FROM recordsubject r WHERE r.seq = {INDEX_SEQ})"
        " ORDER BY d.seq"
    )


def _stray_rows_sql(dialect: str) -> str:
    """The lowest seq of index rows no record accounts for: an unknown kind (the rendering leaves
    those out), or a seq no record has (beyond :n only when the whole chain verified)."""
    kinds = ", ".join(f"'{k}'" for k in SUBJECT_KINDS.values())
    odd = " OR typeof(seq) <> 'integer'" if dialect == "sqlite" else ""  # SQLite keeps a BLOB or 2.5 as given
    return (
        f"SELECT min(seq) FROM recordsubject WHERE kind NOT IN ({kinds}) OR seq < 1 OR (seq > :n AND :complete){odd}"
        # rows of a record that has an alias: its index is the aliased record's, these rows no one's
        " OR seq IN (SELECT seq FROM recordsubjectalias)"
    )


def _stray_aliases_sql() -> str:
    """The lowest seq of aliases no record accounts for (a seq no record has), or that point at no
    earlier record's rows (an alias's own records are checked against those rows in subjects_sql)."""
    return (
        "SELECT min(seq) FROM recordsubjectalias WHERE seq < 1 OR (seq > :n AND :complete)"
        " OR same_as >= seq OR same_as IN (SELECT seq FROM recordsubjectalias)"
    )


def index_matches(subjects: str | bytes, rows: Sequence[Any]) -> bool:
    """Whether index rows (kind, subject_id) are exactly the record's subjects, each once per kind."""
    try:
        data = orjson.loads(subjects)
        expected = sorted((SUBJECT_KINDS[key], sid) for key, ids in data.items() for sid in dict.fromkeys(ids))
        return expected == sorted(tuple(row) for row in rows)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):  # not a subjects object
        return False


_SNAPSHOTS_SQL = {
    "sqlite": "SELECT sha256, CAST(content AS BLOB) FROM snapshot",
    "postgresql": "SELECT sha256, content FROM snapshot",
}
# the snapshots records name: the snapshot_sha256 column, an investigation's result.snapshot_sha and
# a proposal's attributes.llm_reads_sha (what an LLM planner read besides the snapshot)
_SNAPSHOT_REFS_SQL = {
    "sqlite": (
        "SELECT seq, snapshot_sha256,"
        " CASE WHEN stage = 'investigation' THEN json_extract(result, '$.snapshot_sha') END,"
        " CASE WHEN instr(attributes, '\"llm_reads_sha\"') THEN json_extract(attributes, '$.llm_reads_sha') END"
        " FROM decisionrecord WHERE seq <= :n AND (snapshot_sha256 IS NOT NULL OR stage = 'investigation'"
        " OR instr(attributes, '\"llm_reads_sha\"'))"
    ),
    "postgresql": (
        "SELECT seq, snapshot_sha256,"
        " CASE WHEN stage = 'investigation' THEN CAST(result AS jsonb) ->> 'snapshot_sha' END,"
        " CASE WHEN strpos(attributes, '\"llm_reads_sha\"') > 0"
        " THEN CAST(attributes AS jsonb) ->> 'llm_reads_sha' END"
        " FROM decisionrecord WHERE seq <= :n AND (snapshot_sha256 IS NOT NULL OR stage = 'investigation'"
        " OR strpos(attributes, '\"llm_reads_sha\"') > 0)"
    ),
}

Problem = tuple[int | None, str]  # (first bad seq, if a record is to blame; what is wrong)
_cursor_ids = itertools.count()


@contextmanager
def _read_view(session: Session) -> Iterator[Connection]:
    """A connection of the session's engine on which every read of one verification sees the same
    committed state: an append committing meanwhile (records, index rows, head) is wholly visible or
    not at all, never a head newer than the records walked."""
    bind = session.get_bind()
    if isinstance(bind, Connection):  # bound to the caller's transaction: that is the view
        yield bind
        return
    with bind.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        elif not getattr(conn.connection.dbapi_connection, "in_transaction", False):
            # pysqlite opens no transaction for reads: without one, each SELECT sees its own state
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


def _stream(conn: Connection, sql: str, batch: int) -> Generator[Sequence[Any], None, None]:
    """Batches of rows straight from the driver, without ORM or type processing (PostgreSQL streams
    through a server-side cursor)."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if conn.dialect.name == "postgresql":
        cur = dbapi.cursor(name=f"audit_verify_{next(_cursor_ids)}")  # type: ignore[call-arg]
        cur.itersize = batch  # type: ignore[attr-defined]
    else:
        cur = dbapi.cursor()
    try:
        cur.execute(sql)
        while rows := cur.fetchmany(batch):
            yield rows
    finally:
        cur.close()


def _walk(conn: Connection, batch: int, *, guarded: bool = False) -> tuple[int, str, Problem | None]:
    """Records in seq order: (records that chain correctly, the last one's hash, the first problem)."""
    expected_seq, prev = 1, GENESIS
    sha = hashlib.sha256
    with closing(_stream(conn, document_sql(conn.dialect.name, guarded=guarded), batch)) as batches:
        for rows in batches:
            for seq, prev_hash, stored_hash, doc in rows:
                if seq != expected_seq:
                    return expected_seq - 1, prev, _seq_problem(seq, expected_seq)
                if prev_hash != prev:
                    return seq - 1, prev, (seq, f"record {seq}: prev_hash does not match record {seq - 1}'s hash")
                if doc is None:
                    return seq - 1, prev, (seq, f"record {seq}: a field holds a value of the wrong type (modified)")
                if sha(doc if type(doc) is bytes else doc.encode()).hexdigest() != stored_hash:
                    return seq - 1, prev, (seq, f"record {seq}: content does not match its record_hash (modified)")
                prev = stored_hash
                expected_seq += 1
    return expected_seq - 1, prev, None


def _seq_problem(seq: Any, expected: int) -> Problem:
    if type(seq) is not int:  # SQLite stores what it is given: a BLOB or text seq sorts last
        return expected, f"the record after seq {expected - 1} has seq {seq!r}, of the wrong type (modified)"
    if seq > expected:
        return seq, f"seq {seq} follows seq {expected - 1}: a record was deleted or inserted"
    return seq, f"seq {seq} repeats or runs backwards"


def _head_problems(head: Sequence[Any] | None, count: int, last: str) -> list[Problem]:
    if head is None:
        if count == 0:
            return []
        return [(None, f"the chain head row is missing while {count} records exist: the end cannot be checked")]
    seq, digest = head
    if seq == count and digest == last:
        return []
    bad = (count + 1 if seq > count else seq + 1) if type(seq) is int else None
    return [
        (
            bad,
            f"chain head says {seq} records ending in {str(digest)[:12]}, found {count} ending in"
            f" {last[:12]}: records were removed from or added at the end",
        )
    ]


def _subject_problems(conn: Connection, count: int, *, complete: bool) -> list[Problem]:
    """Index rows changed, deleted or added, for the records that chain correctly (1..count)."""
    dialect = conn.dialect.name
    try:
        differing: Sequence[Any] = conn.execute(text(subjects_sql(dialect)), {"n": count}).all()
    except DBAPIError:
        if dialect != "sqlite":
            raise
        differing = conn.execute(text(subjects_sql(dialect, guarded=True)), {"n": count}).all()
    problems: list[Problem] = []
    for seq, subjects, index_seq in differing:  # records 1..count: their seq verified as an integer
        rows = conn.execute(text("SELECT kind, subject_id FROM recordsubject WHERE seq = :s"), {"s": index_seq}).all()
        if not index_matches(subjects, rows):
            problems.append((seq, f"record {seq}: subject index rows differ from its subjects (changed or deleted)"))
            break  # the first is what the report names
    stray = conn.execute(text(_stray_rows_sql(dialect)), {"n": count, "complete": complete}).scalar()
    if stray is not None:
        seq = stray if type(stray) is int else None
        problems.append((seq, f"subject index rows under seq {stray!r} that its record does not name (added)"))
    alias = conn.execute(text(_stray_aliases_sql()), {"n": count, "complete": complete}).scalar()
    if alias is not None:
        seq = alias if type(alias) is int else None
        problems.append(
            (seq, f"subject index alias under seq {alias!r} that no record accounts for (added or changed)")
        )
    return problems


def _snapshot_problems(conn: Connection, count: int, batch: int) -> list[Problem]:
    """Every snapshot's content hashes to its key, and every snapshot the records 1..count name exists."""
    present: set[Any] = set()
    bad: set[Any] = set()
    sha = hashlib.sha256
    with closing(_stream(conn, _SNAPSHOTS_SQL[conn.dialect.name], batch)) as batches:
        for rows in batches:
            for key, content in rows:
                present.add(key)
                raw = content if type(content) is bytes else str(content).encode()
                if content is None or sha(raw).hexdigest() != key:
                    bad.add(key)
    problems: list[Problem] = []
    named: set[Any] = set()
    refs: Sequence[Any] = conn.execute(text(_SNAPSHOT_REFS_SQL[conn.dialect.name]), {"n": count}).all()
    for seq, *keys in refs:
        for key in keys:
            if key is None:
                continue
            named.add(key)
            if key not in present:
                problems.append((seq, f"record {seq} names snapshot {key}, which is missing (deleted)"))
            elif key in bad:
                problems.append((seq, f"record {seq}: snapshot {key} does not match its sha256 (modified)"))
    problems += [(None, f"snapshot {key!r} does not match its sha256 (modified)") for key in bad - named]
    return problems


def _problems(conn: Connection, batch: int) -> tuple[int, str, list[Problem]]:
    head = conn.execute(text("SELECT seq, record_hash FROM chainhead WHERE id = 1")).first()  # first: see _read_view
    try:
        count, last, problem = _walk(conn, batch)
    except conn.dialect.loaded_dbapi.Error:
        if conn.dialect.name != "sqlite":
            raise
        count, last, problem = _walk(conn, batch, guarded=True)
    problems = [problem] if problem else _head_problems(head, count, last)
    problems += _subject_problems(conn, count, complete=problem is None)
    problems += _snapshot_problems(conn, count, batch)
    return count, last, problems


def verify_chain(*, session: Session, batch: int = 5000) -> ChainReport:
    """Verify the committed records: the chain (each record's hash and link, and the head), each
    record's subject index rows, and the snapshots. Reports the earliest record at fault."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with _read_view(session) as conn:
        try:
            count, last, problems = _problems(conn, batch)
        except (DBAPIError, conn.dialect.loaded_dbapi.Error) as exc:  # a table not as the code made it
            count, last, problems = 0, GENESIS, [(None, f"the audit tables could not be read: {exc}")]
    bad, problem = min(problems, key=lambda p: (p[0] is None, p[0] or 0)) if problems else (None, None)
    return ChainReport(
        ok=not problems,
        records=bad - 1 if bad is not None and bad <= count else count,
        first_bad_seq=bad,
        problem=problem,
        head_hash=last,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
    )

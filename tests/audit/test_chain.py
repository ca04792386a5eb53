"""Hash-chain verification: intact chains pass, every kind of tampering is found and named."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from audit import chain
from audit.bench import bench_verify
from audit.chain import GENESIS, record_hash, verify_chain
from audit.models import DecisionRecord, RecordIn, Subjects
from audit.service import append_record, store_snapshot
from tests.audit.factories import fill, record_in


def _verify(engine: Engine):
    with Session(engine) as session:
        return verify_chain(session=session)


def _sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for s in statements:
            conn.exec_driver_sql(s)


def test_empty_chain_is_ok(engine: Engine) -> None:
    rep = _verify(engine)
    assert rep.ok and rep.records == 0 and rep.head_hash == GENESIS


def test_intact_chain_verifies(engine: Engine) -> None:
    fill(engine, 8)
    rep = _verify(engine)
    assert rep.ok, rep.problem
    assert rep.records == 8
    with Session(engine) as session:
        last = session.exec(text("SELECT record_hash FROM decisionrecord WHERE seq = 8")).one()  # type: ignore[call-overload]
    assert rep.head_hash == last[0]


def test_modified_record_is_found(engine: Engine) -> None:
    fill(engine, 6)
    _sql(engine, "UPDATE decisionrecord SET reason = 'approved by nobody' WHERE seq = 4")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 4 and "modified" in (rep.problem or "")


def test_modified_json_field_is_found(engine: Engine) -> None:
    fill(engine, 5)
    _sql(
        engine,
        """UPDATE decisionrecord SET result = '{"amount_cents":50000,"ok":true}' WHERE seq = 2""",
    )
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 2


def test_nulled_json_field_is_found(engine: Engine) -> None:
    fill(engine, 3)
    _sql(engine, "UPDATE decisionrecord SET explanation = NULL WHERE seq = 3")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 3


def test_deleted_record_is_found(engine: Engine) -> None:
    fill(engine, 6)
    _sql(engine, "DELETE FROM decisionrecord WHERE seq = 3")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 4 and "deleted" in (rep.problem or "")


def test_deleted_tail_is_found(engine: Engine) -> None:
    fill(engine, 5)
    _sql(engine, "DELETE FROM decisionrecord WHERE seq = 5")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 5 and "end" in (rep.problem or "")


def test_reordered_records_are_found(engine: Engine) -> None:
    fill(engine, 6)
    _sql(
        engine,
        "UPDATE decisionrecord SET seq = -1 WHERE seq = 3",
        "UPDATE decisionrecord SET seq = 3 WHERE seq = 4",
        "UPDATE decisionrecord SET seq = 4 WHERE seq = -1",
    )
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 3


def test_inserted_record_with_forged_hash_is_found(engine: Engine) -> None:
    """Even a forger who recomputes the inserted record's hash breaks the record after it."""
    fill(engine, 5)
    with Session(engine) as session:
        rec2 = session.exec(text("SELECT record_hash FROM decisionrecord WHERE seq = 2")).one()[0]  # type: ignore[call-overload]
        src = session.get(DecisionRecord, session.exec(text("SELECT id FROM decisionrecord WHERE seq = 3")).one()[0])  # type: ignore[call-overload]
        assert src is not None
        forged = {c: getattr(src, c) for c in DecisionRecord.model_fields}
    _sql(
        engine,
        "UPDATE decisionrecord SET seq = seq + 100 WHERE seq >= 3",
        "UPDATE decisionrecord SET seq = seq - 99 WHERE seq >= 103",
    )
    from audit.models import json_text

    forged.update(id="forged", seq=3, prev_hash=rec2, reason="inserted later")
    values = {
        k: (json_text(v) if k in ("subjects", "steps", "verdicts", "result", "explanation", "attributes") else v)
        for k, v in forged.items()
    }
    forged["record_hash"] = record_hash(values)
    with Session(engine) as session:
        session.add(DecisionRecord(**forged))
        session.commit()
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 4, rep


def test_appended_record_without_head_is_found(engine: Engine) -> None:
    fill(engine, 3)
    with Session(engine) as session:
        src = session.exec(text("SELECT id FROM decisionrecord WHERE seq = 3")).one()[0]  # type: ignore[call-overload]
        rec = session.get(DecisionRecord, src)
        assert rec is not None
        forged = {c: getattr(rec, c) for c in DecisionRecord.model_fields}
    from audit.models import json_text

    forged.update(id="tail", seq=4, prev_hash=forged["record_hash"])
    values = {
        k: (json_text(v) if k in ("subjects", "steps", "verdicts", "result", "explanation", "attributes") else v)
        for k, v in forged.items()
    }
    forged["record_hash"] = record_hash(values)
    with Session(engine) as session:
        session.add(DecisionRecord(**forged))
        session.commit()
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 4 and "end" in (rep.problem or "")


def test_verification_throughput() -> None:
    """The target is >= 100,000 records/s on an idle core; the bound here is loose for shared CI."""
    result = bench_verify(n=10_000)
    assert result["ok"] and result["records"] == 10_000
    assert result["records_per_s"] > 10_000, result


@pytest.mark.parametrize("n", [1, 2])
def test_bench_tiny(n: int) -> None:
    assert bench_verify(n=n)["records"] == n


def test_database_rendering_matches_python_for_awkward_values(engine: Engine) -> None:
    """Verification hashes the document as the database renders it: every control character,
    quote, backslash, non-ASCII text and odd confidence must come out exactly as at append."""
    from audit.models import RecordIn
    from audit.service import append_record

    awkward = "".join(chr(i) for i in range(1, 32)) + '"\\/\x7f é \u2028 \u2029 \ufeff 😀 </script>'
    with Session(engine) as session:
        for i, conf in enumerate((None, 0.0, 1.0, 1e-06, 0.1 + 0.2, 0.8499999, 2 / 3)):
            append_record(
                session=session,
                record=RecordIn(
                    stage="decision",
                    incident_id=f"inc {awkward}",
                    reason=awkward * (i + 1) + "\x00nul",
                    approver_id="sup'; DROP TABLE x; --",
                    confidence=conf,
                    steps=[{"args": {"note": awkward, "n": 1.5e-7, "big": 2**53}}],
                    attributes={"gen_ai.usage.input_tokens": i},
                ),
            )
        session.commit()
    rep = _verify(engine)
    assert rep.ok, rep.problem
    assert rep.records == 7


# -- snapshots: content and existence ------------------------------------------------------------


def _snapshot_of(engine: Engine, seq: int) -> str:
    with Session(engine) as session:
        return session.exec(text(f"SELECT snapshot_sha256 FROM decisionrecord WHERE seq = {seq}")).one()[0]  # type: ignore[call-overload]


def test_modified_snapshot_is_found(engine: Engine) -> None:
    fill(engine, 4)
    sha = _snapshot_of(engine, 3)
    _sql(
        engine,
        f"""UPDATE snapshot SET content = '{{"orders":{{"o3":{{"status":"delivered"}}}}}}' WHERE sha256 = '{sha}'""",
    )
    rep = _verify(engine)
    assert (
        not rep.ok
        and rep.first_bad_seq == 3
        and "snapshot" in (rep.problem or "")
        and "modified" in (rep.problem or "")
    )


def test_modified_snapshot_no_record_names_is_found(engine: Engine) -> None:
    with Session(engine) as session:
        sha = store_snapshot(session=session, content={"a": 1})
        session.commit()
    _sql(engine, f"""UPDATE snapshot SET content = '{{"a":2}}' WHERE sha256 = '{sha}'""")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq is None and sha in (rep.problem or "")


def test_deleted_snapshot_is_found(engine: Engine) -> None:
    fill(engine, 4)
    _sql(engine, f"DELETE FROM snapshot WHERE sha256 = '{_snapshot_of(engine, 2)}'")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 2 and "missing" in (rep.problem or "")


def test_snapshot_named_by_an_investigation_result_must_exist(engine: Engine) -> None:
    with Session(engine) as session:
        sha = store_snapshot(session=session, content={"orders": {}})
        reads = store_snapshot(session=session, content={"llm_reads": []})
        append_record(session=session, record=RecordIn(stage="investigation", result={"snapshot_sha": sha}))
        append_record(session=session, record=RecordIn(stage="proposal", attributes={"llm_reads_sha": reads}))
        session.commit()
    assert _verify(engine).ok
    _sql(engine, f"DELETE FROM snapshot WHERE sha256 = '{reads}'")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 2 and reads in (rep.problem or "")
    _sql(engine, f"DELETE FROM snapshot WHERE sha256 = '{sha}'")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 1 and sha in (rep.problem or "")


# -- the subject index ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "bad_seq"),
    [
        ("UPDATE recordsubject SET subject_id = 'o-other' WHERE seq = 3 AND subject_id = 'o3'", 3),
        ("UPDATE recordsubject SET kind = 'rider' WHERE seq = 3 AND subject_id = 'o3'", 3),
        ("UPDATE recordsubject SET seq = 2 WHERE seq = 3 AND subject_id = 'o3'", 2),
        ("DELETE FROM recordsubject WHERE seq = 4 AND kind = 'customer'", 4),
        ("DELETE FROM recordsubject", 1),
        ("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (3, 'order', 'o-extra')", 3),
        ("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (3, 'order', 'o3')", 3),  # a duplicate row
        ("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (2, 'vehicle', 'v1')", 2),  # unknown kind
        ("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (9, 'order', 'o9')", 9),  # no such record
        ("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (0, 'order', 'o9')", 0),
    ],
)
def test_subject_index_tampering_is_found(engine: Engine, statement: str, bad_seq: int) -> None:
    fill(engine, 5)
    assert _verify(engine).ok
    _sql(engine, statement)
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == bad_seq, rep
    assert "subject index" in (rep.problem or "")


def test_subject_index_in_another_order_is_no_alarm(engine: Engine) -> None:
    """Rows rewritten in another order (new ids) still index exactly the record's subjects."""
    fill(engine, 3)
    with engine.begin() as conn:
        rows = conn.exec_driver_sql("SELECT seq, kind, subject_id FROM recordsubject WHERE seq = 2").all()
        conn.exec_driver_sql("DELETE FROM recordsubject WHERE seq = 2")
        for seq, kind, sid in reversed(rows):
            conn.execute(
                text("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (:s, :k, :i)"),
                {"s": seq, "k": kind, "i": sid},
            )
    rep = _verify(engine)
    assert rep.ok, rep.problem


def test_duplicate_subjects_are_recorded_once(engine: Engine) -> None:
    with Session(engine) as session:
        rec = append_record(
            session=session, record=RecordIn(stage="intake", subjects=Subjects(orders=["o1", "o2", "o1"]))
        )
        session.commit()
        assert rec.subjects["orders"] == ["o1", "o2"]
    assert _verify(engine).ok


def _same_subjects_chain(engine: Engine) -> None:
    """Records 1-5: 2, 3 and 4 name what 1 names (3 and 4 alias 1 through 2's alias), 5 other ones."""
    shared = Subjects(orders=["o1", "o2"], riders=["r1"], customers=["c1"])
    with Session(engine) as session:
        for subjects in [shared, shared, shared, shared, Subjects(orders=["o9"])]:
            append_record(session=session, record=RecordIn(stage="proposal", incident_id="inc-1", subjects=subjects))
        session.commit()


def test_records_with_the_subjects_of_the_one_before_share_its_index_rows(engine: Engine) -> None:
    from sqlmodel import select

    from audit.models import RecordSubject, RecordSubjectAlias
    from audit.service import list_records

    _same_subjects_chain(engine)
    with Session(engine) as session:
        aliases = {a.seq: a.same_as for a in session.exec(select(RecordSubjectAlias))}
        assert aliases == {2: 1, 3: 1, 4: 1}  # always the record holding the rows
        assert {r.seq for r in session.exec(select(RecordSubject))} == {1, 5}
        assert [r.seq for r in list_records(session=session, order_id="o2")] == [1, 2, 3, 4]
        assert [r.seq for r in list_records(session=session, order_id="o9")] == [5]
    assert _verify(engine).ok


@pytest.mark.parametrize(
    ("statement", "bad_seq"),
    [
        ("DELETE FROM recordsubjectalias WHERE seq = 3", 3),  # record 3 then has no index rows
        ("UPDATE recordsubjectalias SET same_as = 5 WHERE seq = 4", 4),  # a later record's rows
        ("UPDATE recordsubjectalias SET same_as = 3 WHERE seq = 4", 4),  # an alias of an alias
        ("UPDATE recordsubjectalias SET same_as = 2 WHERE seq = 2", 2),  # itself
        ("INSERT INTO recordsubjectalias (seq, same_as) VALUES (5, 1)", 5),  # other subjects than 1's
        ("INSERT INTO recordsubjectalias (seq, same_as) VALUES (9, 1)", 9),  # no such record
        ("INSERT INTO recordsubject (seq, kind, subject_id) VALUES (3, 'order', 'o1')", 3),  # rows of an alias
        ("DELETE FROM recordsubject WHERE seq = 1 AND kind = 'rider'", 1),  # the shared rows: 1 is named first
    ],
)
def test_subject_index_alias_tampering_is_found(engine: Engine, statement: str, bad_seq: int) -> None:
    _same_subjects_chain(engine)
    assert _verify(engine).ok
    _sql(engine, statement)
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == bad_seq, rep
    assert "subject index" in (rep.problem or "")


# -- the chain head, concurrent appends, confidence, storage types ----------------------------


def test_missing_head_row_is_found(engine: Engine) -> None:
    """Truncating the tail with its index rows and the head row leaves no trace but the missing head."""
    fill(engine, 5)
    _sql(
        engine,
        "DELETE FROM decisionrecord WHERE seq = 5",
        "DELETE FROM recordsubject WHERE seq = 5",
        "DELETE FROM chainhead",
    )
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq is None and "head" in (rep.problem or ""), rep
    assert rep.records == 4


def test_append_during_verification_is_no_alarm(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends committing while verification reads: it sees the chain as of one moment."""
    fill(engine, 5)
    stream = chain._stream
    added = iter(range(6, 100))

    def append() -> None:
        with Session(engine) as w:
            append_record(session=w, record=record_in(next(added)))
            w.commit()

    def appending_stream(*args: Any, **kwargs: Any) -> Any:
        append()  # before the records are read
        yield from stream(*args, **kwargs)
        append()  # and after

    monkeypatch.setattr(chain, "_stream", appending_stream)
    rep = _verify(engine)
    assert rep.ok, rep.problem
    assert rep.records == 5
    monkeypatch.undo()
    rep = _verify(engine)
    assert rep.ok and rep.records > 5, rep


def test_confidence_nudged_below_rounding_is_found(engine: Engine) -> None:
    fill(engine, 4)
    _sql(engine, "UPDATE decisionrecord SET confidence = confidence + 0.0000004 WHERE seq = 3")
    rep = _verify(engine)
    assert not rep.ok and rep.first_bad_seq == 3 and "modified" in (rep.problem or "")


@pytest.mark.parametrize(
    ("statement", "bad_seq"),
    [
        ("UPDATE decisionrecord SET approver_id = CAST('sup-1' AS BLOB) WHERE seq = 3", 3),
        ("UPDATE decisionrecord SET recorded_at = CAST(recorded_at AS BLOB) WHERE seq = 2", 2),
        ("UPDATE decisionrecord SET seq = CAST('5' AS BLOB) WHERE seq = 5", 5),
        ("UPDATE decisionrecord SET confidence = CAST('0.5' AS BLOB) WHERE seq = 1", 1),
        ("UPDATE recordsubject SET subject_id = CAST(subject_id AS BLOB) WHERE seq = 2 AND kind = 'rider'", 2),
        ("UPDATE recordsubject SET seq = 2.5 WHERE seq = 2 AND kind = 'rider'", 2),
    ],
)
def test_value_of_the_wrong_storage_type_is_a_modification(
    sqlite_only_engine: Engine, statement: str, bad_seq: int
) -> None:
    """SQLite stores what it is given: verification names the record instead of failing."""
    fill(sqlite_only_engine, 5, approver="sup-1")
    _sql(sqlite_only_engine, statement)
    rep = _verify(sqlite_only_engine)
    assert not rep.ok and rep.first_bad_seq == bad_seq, rep


def test_a_list_text_made_from_its_items_texts_is_the_lists_own_text() -> None:
    # the plan's steps are stored and hashed from texts made item by item: they must be the bytes
    # json_text writes for the whole list, unicode, nesting, non-string keys and empty lists included
    from audit.models import json_list_text, json_text

    items: list[object] = [
        {"b": 1, "a": [1.5, None, True], "ü": 'naïve "quoted"\n'},
        {3: "int key", "nested": {"z": [], "y": {}}},
        [],
        "plain",
        0,
    ]
    assert json_list_text(json_text(i) for i in items) == json_text(items)
    assert json_list_text([]) == json_text([])
    assert json_list_text([json_text({"a": 1})]) != json_text([{"a": 2}])

"""Hash-chain verification: intact chains pass, every kind of tampering is found and named."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from audit.chain import GENESIS, bench_verify, record_hash, verify_chain
from audit.models import DecisionRecord
from tests.audit.factories import fill


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

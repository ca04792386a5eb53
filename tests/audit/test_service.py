"""append_record / list_records / snapshots, on both backends, including concurrent writers."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from audit.chain import verify_chain
from audit.models import DecisionRecord, RecordSubject, Snapshot
from audit.service import (
    SnapshotIntegrityError,
    append_record,
    get_snapshot,
    get_snapshot_text,
    list_records,
    store_snapshot,
)
from tests.audit.factories import T0, fill, record_in


def test_append_assigns_seq_prev_hash_and_subjects(engine: Engine) -> None:
    with Session(engine) as session:
        a = append_record(session=session, record=record_in(1))
        b = append_record(session=session, record=record_in(2, approver="sup-1"))
        session.commit()
        assert (a.seq, b.seq) == (1, 2)
        assert b.prev_hash == a.record_hash and a.prev_hash == "0" * 64
        assert a.recorded_at.tzinfo is not None
        subjects = session.exec(select(RecordSubject).where(RecordSubject.seq == 2)).all()
        assert {(s.kind, s.subject_id) for s in subjects} == {
            ("order", "o2"),
            ("order", "o-shared"),
            ("rider", "r2"),
            ("customer", "c2"),
        }
    with Session(engine) as session:
        rec = session.exec(select(DecisionRecord).where(DecisionRecord.seq == 2)).one()
        # JSON round-trips as data, with the OpenTelemetry GenAI attribute names intact
        assert rec.attributes["gen_ai.request.model"] == "playbook"
        assert rec.explanation["shap_values"]["delay_minutes"] == 120.5
        assert rec.reason == 'héllo "quoted"\nnew line'
        assert verify_chain(session=session).ok


def test_snapshot_stored_once_by_hash(engine: Engine) -> None:
    with Session(engine) as session:
        h1 = store_snapshot(session=session, content={"b": 1, "a": [1, 2]})
        h2 = store_snapshot(session=session, content={"a": [1, 2], "b": 1})
        session.commit()
        assert h1 == h2 and len(h1) == 64
        assert len(session.exec(select(Snapshot)).all()) == 1
        assert get_snapshot(session=session, sha256=h1) == {"a": [1, 2], "b": 1}
        rec = append_record(session=session, record=record_in(1))
        session.commit()
        assert rec.snapshot_sha256 is not None
        assert get_snapshot(session=session, sha256=rec.snapshot_sha256) == record_in(1).snapshot


def test_list_records_filters(engine: Engine) -> None:
    fill(engine, 4, incident="inc-a")
    with Session(engine) as session:
        for i in range(5, 8):
            append_record(session=session, record=record_in(i, incident="inc-b", approver=f"sup-{i % 2}"))
        session.commit()
        assert [r.seq for r in list_records(session=session, incident_id="inc-a")] == [1, 2, 3, 4]
        assert [r.seq for r in list_records(session=session, order_id="o6")] == [6]
        assert len(list_records(session=session, order_id="o-shared")) == 7
        assert [r.seq for r in list_records(session=session, actor="sup-1")] == [5, 7]
        window = list_records(session=session, since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=6))
        assert [r.seq for r in window] == [3, 4, 5]
        assert [r.seq for r in list_records(session=session, limit=2, offset=1)] == [2, 3]


def test_concurrent_appends_never_fork_the_chain(engine: Engine) -> None:
    """Writers in separate sessions and threads: seqs stay 1..n with no duplicate prev_hash."""
    n_threads, per_thread = 4, 5
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with Session(engine) as session:
                    append_record(session=session, record=record_in(t * 100 + i, incident=f"inc-{t}"))
                    session.commit()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    with Session(engine) as session:
        rep = verify_chain(session=session)
        assert rep.ok, rep.problem
        assert rep.records == n_threads * per_thread


def test_get_snapshot_refuses_altered_content(engine: Engine) -> None:
    """Nothing plans from altered facts: content that no longer hashes to its key raises."""
    with Session(engine) as session:
        sha = store_snapshot(session=session, content={"orders": {"o1": {"value_cents": 1200}}})
        session.commit()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE snapshot SET content = :c WHERE sha256 = :h"),
            {"c": '{"orders":{"o1":{"value_cents":1}}}', "h": sha},
        )
    with Session(engine) as session:
        with pytest.raises(SnapshotIntegrityError, match=sha):
            get_snapshot(session=session, sha256=sha)
        with pytest.raises(SnapshotIntegrityError):
            get_snapshot_text(session=session, sha256=sha)
        assert get_snapshot(session=session, sha256="0" * 64) is None


def test_get_snapshot_text_is_the_stored_canonical_text(engine: Engine) -> None:
    with Session(engine) as session:
        sha = store_snapshot(session=session, content={"b": [1, "é"], "a": None})
        session.commit()
        body = get_snapshot_text(session=session, sha256=sha)
    assert body == '{"a":null,"b":[1,"é"]}'
    assert hashlib.sha256(body.encode()).hexdigest() == sha

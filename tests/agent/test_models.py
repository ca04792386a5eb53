"""A database made by an earlier version (incidents holding their event lists, or without the count of
checked events) is brought up to date."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

import tools.db
from agent.incidents import incident_event_ids, incident_payloads, ingest_events
from agent.models import Incident
from tests.agent.test_incidents import T0, WINDOW, ev
from tools.db import column_names as _column_names
from tools.db import init_db, make_engine, session_scope
from tools.events import ExceptionType


def _as_before(engine: Engine) -> None:
    """The incident tables as the previous version made them: event lists on the incident row, no
    event count, no event positions, no plan digest, no checked events."""
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_incident_unchecked"))
        for table, column in (
            ("incident", "event_count"),
            ("incident", "plan_sha"),
            ("incident", "checked_events"),
            ("incidentevent", "seq"),
        ):
            conn.execute(text(f'ALTER TABLE "{table}" DROP COLUMN {column}'))
        conn.execute(text("ALTER TABLE incident ADD COLUMN event_ids JSON"))
        conn.execute(text("ALTER TABLE incident ADD COLUMN payloads JSON"))
        conn.execute(
            text(
                "INSERT INTO incident (id, thread_id, type, family, zone, status, planner, autonomy, summary,"
                " opened_at, updated_at, last_event_at, event_ids, order_ids, rider_ids, store_ids,"
                " customer_ids, payloads, verdicts, step_status, snapshot_sha)"
                " VALUES ('inc-old', 'inc-old', 'order_late_risk', 'delivery_delay', 'z1', 'open', '', '', '',"
                " :t, :t, :t, :ids, '[\"o1\"]', '[]', '[]', '[]', :payloads, '{}', '{}', '')"
            ),
            {
                "t": T0,
                "ids": '["late-b", "late-a"]',
                "payloads": '[{"event_id": "late-b", "type": "order_late_risk", "minutes": 5}]',
            },
        )
        for event_id in ("late-a", "late-b"):  # stored in another order than they joined
            conn.execute(
                text(
                    "INSERT INTO incidentevent (event_id, incident_id, type, received_at, occurred_at, event)"
                    " VALUES (:id, 'inc-old', 'order_late_risk', :t, :t, :event)"
                ),
                {"id": event_id, "t": T0, "event": f'{{"id": "{event_id}", "payload": {{"n": "{event_id}"}}}}'},
            )


def test_an_earlier_database_gets_event_counts_and_positions_from_its_event_lists(engine: Engine) -> None:
    _as_before(engine)
    init_db(engine)  # what the service does at start
    init_db(engine)  # and again: the upgrade is done once
    with Session(engine) as s:
        inc = s.get(Incident, "inc-old")
        assert inc is not None and inc.event_count == 2 and inc.plan_sha == "" and inc.checked_events == 2
        assert incident_event_ids(session=s, incident_id="inc-old") == ["late-b", "late-a"]
        assert [p["n"] for p in incident_payloads(session=s, incident_id="inc-old")] == ["late-b", "late-a"]
    # and it goes on working: a new event joins the old incident after its two
    joining = ev("late-c", ExceptionType.order_late_risk, orders=["o1"], zone="z1")
    with session_scope(engine) as s:
        (result,) = ingest_events(session=s, events=[joining], now=T0 + timedelta(minutes=1), window_s=WINDOW)
    assert result.incident_id == "inc-old" and not result.new_incident
    with Session(engine) as s:
        inc = s.get(Incident, "inc-old")
        assert inc is not None and inc.event_count == 3
        assert incident_event_ids(session=s, incident_id="inc-old") == ["late-b", "late-a", "late-c"]


def test_a_database_without_checked_events_counts_every_incident_as_checked(engine: Engine) -> None:
    with session_scope(engine) as s:
        (result,) = ingest_events(
            session=s,
            events=[ev("e1", ExceptionType.order_late_risk, orders=["o1"], zone="z1")],
            now=T0,
            window_s=WINDOW,
        )
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_incident_unchecked"))
        conn.execute(text("ALTER TABLE incident DROP COLUMN checked_events"))
    init_db(engine)
    with Session(engine) as s:
        inc = s.get(Incident, result.incident_id)
        assert inc is not None and inc.event_count == 1 and inc.checked_events == 1
    # with the partial index the worker's recovery looks them up by
    assert "ix_incident_unchecked" in {ix["name"] for ix in inspect(engine).get_indexes("incident")}


def test_the_recovery_look_up_of_unchecked_incidents_uses_the_partial_index(sqlite_only_engine: Engine) -> None:
    with sqlite_only_engine.connect() as conn:
        plan = conn.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT id FROM incident"
                " WHERE status IN ('resolved', 'escalated') AND event_count > checked_events"
            )
        ).all()
    assert any("ix_incident_unchecked" in str(row) for row in plan), plan


def test_processes_starting_together_on_an_earlier_database_upgrade_it_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two starts at once (a service and its worker): without turns, both read the old columns, both
    add the new ones, and the second fails. Each start here, once it has read the columns, waits up to
    a second for the other to have read them too, so an unserialised upgrade always collides."""
    _as_before(engine)
    both_read = threading.Barrier(2, timeout=1.0)
    waited: set[str] = set()

    def columns_then_wait(conn: Connection, table: str) -> set[str]:
        names = _column_names(conn, table)
        me = threading.current_thread().name
        if table == "incident" and me.startswith("start-") and me not in waited:
            waited.add(me)
            try:
                both_read.wait()
            except threading.BrokenBarrierError:  # the other start waits for this one's turn to end
                pass
        return names

    monkeypatch.setattr(tools.db, "column_names", columns_then_wait)
    url = engine.url.render_as_string(hide_password=False)
    errors: list[BaseException] = []

    def start() -> None:
        eng = make_engine(url)
        try:
            init_db(eng)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=start, name=f"start-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with Session(engine) as s:
        inc = s.get(Incident, "inc-old")
        assert inc is not None and inc.event_count == 2 and inc.checked_events == 2


def test_production_refuses_the_llm_planner_with_the_placeholder_key() -> None:
    import pytest
    from pydantic import ValidationError

    from agent.settings import Settings

    with pytest.raises(ValidationError, match="LLM_API_KEY"):
        Settings(environment="production", planner="llm")
    assert Settings(environment="production", planner="llm", llm_api_key="sk-real").planner == "llm"
    assert Settings(environment="production").planner == "playbook"  # the embedded planner needs no key

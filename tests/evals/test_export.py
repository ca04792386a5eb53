"""A recorded incident becomes a case that replays and passes."""

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from agent.models import IncidentEvent
from agent.runtime import AgentRuntime, make_planner
from agent.settings import get_settings
from evals.case import CASES_DIR, IncidentCase, load_case
from evals.export import export_incident
from evals.replay import run_trial
from evals.scenario import build_world, case_events, resolve_bindings
from tools.clock import FakeClock
from tools.db import get_engine
from tools.events import ExceptionEvent
from tools.models import Stock
from tools.service import world_now


def _refund_world(url: str) -> tuple[Any, list[ExceptionEvent], datetime]:
    """A database holding the world of the stockout-refund case; its events and the world's time."""
    engine = get_engine(url)
    source = load_case(CASES_DIR / "stockout-refund.json")
    with Session(engine, expire_on_commit=False) as s:
        preset = build_world(session=s, case=source, data_dir=Path(get_settings().data_dir))
        bound = resolve_bindings(session=s, bind=source.bind)
        events = case_events(session=s, case=source, bound=bound, preset_events=preset, trial=0)
        return engine, events, world_now(session=s)


def test_an_incident_recorded_by_the_agent_exports_to_a_case_that_replays_and_passes(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    engine, events, start = _refund_world(url)
    settings = get_settings().model_copy(update={"database_url": url})
    with AgentRuntime(
        engine=engine, settings=settings, clock=FakeClock(start), planner=make_planner(settings, "playbook")
    ) as rt:
        incident_id = rt.ingest(events)[0].incident_id
        out = rt.run_incident(incident_id)
        assert out.request_id is not None
        from guardrails.service import list_steps

        with Session(engine) as s:
            steps = list_steps(session=s, request_id=out.request_id)
        for st in steps:
            rt.decide(
                request_id=out.request_id,
                step_index=st.step_index,
                decision="approve",
                actor_id="sup-1",
                actor_role="supervisor",
            )

    exported = export_incident(incident_id=incident_id, database_url=url)
    case = IncidentCase.model_validate(exported)
    assert case.world.preset == "small"
    assert any(p.tool == "issue_compensation" for p in case.expect.must_execute)
    assert any(p.tool == "issue_compensation" for p in case.expect.must_request_approval)
    result = run_trial(case, planner="playbook", trial=0)
    failed = [(c.name, c.detail) for c in result.checks if not c.passed]
    assert result.passed, failed


def test_an_incident_recorded_by_the_service_over_http_exports_to_a_case_that_replays_and_passes(
    tmp_path: Path,
) -> None:
    """The production path: an order system posts the events, the service's worker runs the incident,
    a supervisor approves over HTTP; the incident then becomes a regression case in one call."""
    from fastapi.testclient import TestClient

    from agent.api.app import create_app
    from agent.api.service import create_token

    url = f"sqlite:///{tmp_path / 'service.db'}"
    engine, events, start = _refund_world(url)
    with Session(engine) as s:
        _, integration = create_token(session=s, name="order-system", role="integration")
        _, supervisor = create_token(session=s, name="sup-1", role="supervisor")
        s.commit()
    settings = get_settings().model_copy(update={"database_url": url, "planner": "playbook"})
    app = create_app(settings, engine=engine, clock=FakeClock(start), background=False)
    with TestClient(app) as client:
        posted = client.post(
            "/events",
            json=[e.model_dump(mode="json") for e in events],
            headers={"Authorization": f"Bearer {integration}"},
        )
        assert posted.status_code == 202, posted.text
        (incident_id,) = posted.json()["incident_ids"]
        app.state.worker.drain(timeout_s=60)
        sup = {"Authorization": f"Bearer {supervisor}"}
        (request,) = client.get(f"/approvals?incident_id={incident_id}", headers=sup).json()
        for step in request["steps"]:
            decided = client.post(
                f"/approvals/{request['id']}/steps/{step['step_index']}/decision",
                json={"decision": "approve"},
                headers=sup,
            )
            assert decided.status_code == 200, decided.text
        app.state.worker.drain(timeout_s=60)
        detail = client.get(f"/incidents/{incident_id}", headers=sup).json()
        assert detail["incident"]["status"] in ("resolved", "escalated"), detail["incident"]

    exported = export_incident(incident_id=incident_id, database_url=url)
    case = IncidentCase.model_validate(exported)
    assert [e.event["id"] for e in case.events if e.event] == [e.id for e in events]  # as received, in order
    assert any(p.tool == "issue_compensation" for p in case.expect.must_request_approval)
    assert any(p.tool == "issue_compensation" for p in case.expect.must_execute)
    result = run_trial(case, planner="playbook", trial=0)
    failed = [(c.name, c.detail) for c in result.checks if not c.passed]
    assert result.passed, failed


def _record_and_export(case_id: str, tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """Run a core case as the service would (its world, events and scripted supervisors) in a database
    that keeps the end state, and export its incident from there: the world as the agent left it."""
    from evals.replay import _answer_approvals
    from evals.scenario import apply_op

    url = f"sqlite:///{tmp_path / 'prod.db'}"
    engine = get_engine(url)
    source = load_case(CASES_DIR / f"{case_id}.json")
    with Session(engine, expire_on_commit=False) as s:
        preset = build_world(session=s, case=source, data_dir=Path(get_settings().data_dir))
        bound = resolve_bindings(session=s, bind=source.bind)
        for op in source.setup:
            apply_op(session=s, op=op, bound=bound)
        s.commit()
        events = case_events(session=s, case=source, bound=bound, preset_events=preset, trial=0)
        clock = FakeClock(world_now(session=s))
    settings = get_settings().model_copy(
        update={"database_url": url, "autonomy_default": source.autonomy, "autonomy_overrides": {}}
    )
    with AgentRuntime(engine=engine, settings=settings, clock=clock, planner=make_planner(settings, "playbook")) as rt:
        (incident_id,) = sorted({r.incident_id for r in rt.ingest(events)})
        rt.run_incident(incident_id)
        _answer_approvals(rt, engine, source, [incident_id], clock, bound)
    return export_incident(incident_id=incident_id, database_url=url), engine


def test_an_exported_stockout_starts_from_the_short_line_and_the_stock_before_the_substitute(tmp_path: Path) -> None:
    from tools.models import OrderLine

    exported, engine = _record_and_export("stockout-substitute", tmp_path)
    with Session(engine) as s:
        (line,) = [ln for ln in s.exec(select(OrderLine)) if ln.status == "substituted"]
        stock = {(st.store_id, st.sku_id): st.on_hand for st in s.exec(select(Stock))}
    # the agent substituted the short line; the case sets it short again, with its original SKU
    (restored,) = [op for op in exported["setup"] if op.get("entity") == "order_line" and op["id"] == line.id]
    assert restored["fields"]["status"] == "short" and restored["fields"]["sku_id"] == line.substituted_from
    levels = {(op["store_id"], op["sku_id"]): op["on_hand"] for op in exported["setup"] if op["op"] == "set_stock"}
    assert levels[(_store_of(engine, line.order_id), line.substituted_from)] == 0
    assert all(levels[k] == stock[k] for k in levels)  # a substitute reserves: on hand is unchanged
    assert any(p["tool"] == "substitute_item" for p in exported["expect"]["must_execute"])
    result = run_trial(IncidentCase.model_validate(exported), planner="playbook", trial=0)
    assert result.passed, [(c.name, c.detail) for c in result.checks if not c.passed]


def test_an_exported_transfer_puts_the_units_back_on_the_source_shelf(tmp_path: Path) -> None:
    from agent.models import ExecutedStep

    exported, engine = _record_and_export("stockout-transfer", tmp_path)
    with Session(engine) as s:
        (moved,) = [e.result for e in s.exec(select(ExecutedStep)) if e.tool == "transfer_stock"]
        now = {(st.store_id, st.sku_id): st.on_hand for st in s.exec(select(Stock))}
    levels = {(op["store_id"], op["sku_id"]): op["on_hand"] for op in exported["setup"] if op["op"] == "set_stock"}
    src, dst = (moved["from_store_id"], moved["sku_id"]), (moved["to_store_id"], moved["sku_id"])
    assert levels[src] == now[src] + moved["quantity"] and levels[dst] == now[dst] - moved["quantity"]
    result = run_trial(IncidentCase.model_validate(exported), planner="playbook", trial=0)
    assert result.passed, [(c.name, c.detail) for c in result.checks if not c.passed]


def test_an_exported_rider_offline_incident_keeps_every_rider_that_was_offline(tmp_path: Path) -> None:
    """rider-offline-no-cover: every other rider was offline too (without an event of their own), so
    the agent could only escalate; the case must not hand the replay a fleet the incident did not have."""
    from tools.models import Rider, RiderStatus

    exported, engine = _record_and_export("rider-offline-no-cover", tmp_path)
    with Session(engine) as s:
        offline = {r.id for r in s.exec(select(Rider).where(Rider.status == RiderStatus.offline))}
    set_offline = {op["id"] for op in exported["setup"] if op.get("entity") == "rider"}
    assert len(offline) > 1 and set_offline == offline
    result = run_trial(IncidentCase.model_validate(exported), planner="playbook", trial=0)
    assert result.passed, [(c.name, c.detail) for c in result.checks if not c.passed]
    assert any(st.tool == "escalate_incident" and st.executed for st in result.steps)


def _store_of(engine: Any, order_id: str) -> str:
    from tools.models import Order

    with Session(engine) as s:
        order = s.get(Order, order_id)
        assert order is not None
        return order.store_id


def test_an_exported_weather_incident_restores_its_slowdown_or_says_it_cannot(tmp_path: Path) -> None:
    from tools.models import Weather

    exported, engine = _record_and_export("weather-small", tmp_path)
    (added,) = [op for op in exported["setup"] if op["op"] == "add"]
    assert added["entity"] == "weather" and added["fields"]["speed_factor"] == 0.55
    assert "NOT FAITHFUL" not in exported["title"]
    with Session(engine) as s:  # a world that no longer holds the weather: the case says so
        for w in s.exec(select(Weather)):
            s.delete(w)
        s.commit()
        (incident_id,) = {e.incident_id for e in s.exec(select(IncidentEvent))}
    honest = export_incident(incident_id=incident_id, database_url=str(engine.url))
    assert not [op for op in honest["setup"] if op["op"] == "add"]
    assert "NOT FAITHFUL" in honest["title"] and "weather-not-restored" in honest["tags"]

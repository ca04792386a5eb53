"""A recorded incident becomes a case that replays and passes."""

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from agent.runtime import AgentRuntime, make_planner
from agent.settings import get_settings
from evals.case import CASES_DIR, IncidentCase, load_case
from evals.export import export_incident
from evals.replay import run_trial
from evals.scenario import build_world, case_events, resolve_bindings
from tools.clock import FakeClock
from tools.db import get_engine
from tools.events import ExceptionEvent
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

"""A recorded incident becomes a case that replays and passes."""

from pathlib import Path

from sqlmodel import Session

from agent.runtime import AgentRuntime, make_planner
from agent.settings import get_settings
from evals.case import CASES_DIR, IncidentCase, load_case
from evals.export import export_incident
from evals.replay import run_trial
from evals.scenario import build_world, case_events, resolve_bindings
from tools.clock import FakeClock
from tools.db import get_engine
from tools.service import world_now


def test_an_incident_recorded_by_the_agent_exports_to_a_case_that_replays_and_passes(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    engine = get_engine(url)
    source = load_case(CASES_DIR / "stockout-refund.json")
    with Session(engine, expire_on_commit=False) as s:
        preset = build_world(session=s, case=source, data_dir=Path(get_settings().data_dir))
        bound = resolve_bindings(session=s, bind=source.bind)
        events = case_events(session=s, case=source, bound=bound, preset_events=preset, trial=0)
        start = world_now(session=s)
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

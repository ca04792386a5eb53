"""The replay runner on small cases: what it reads back from the agent's tables, how it times the
decision, the events that arrive while an approval waits, and which cases a run selects."""

import json
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from agent.execute import idempotency_key
from agent.models import ExecutedStep, ExecutionStatus
from agent.plan import PlanStep
from agent.runtime import AgentRuntime, make_planner
from agent.settings import get_settings
from evals.case import CASES_DIR, IncidentCase, load_case
from evals.replay import read_trajectory, run_trial
from evals.scenario import build_world, case_events, resolve_bindings
from guardrails.models import ApprovalStep
from guardrails.service import decide_step
from tools.clock import FakeClock
from tools.db import get_engine
from tools.service import world_now


def test_a_step_run_before_its_approval_fails_the_gate_though_the_replay_clock_stands_still(tmp_path: Path):
    """Approval and execution carry the same (frozen) time in a replay; the gate must still see
    that the refund ran while its approval was pending."""
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    engine = get_engine(url)
    case = load_case(CASES_DIR / "stockout-refund.json")
    with Session(engine, expire_on_commit=False) as s:
        preset = build_world(session=s, case=case, data_dir=Path(get_settings().data_dir))
        bound = resolve_bindings(session=s, bind=case.bind)
        events = case_events(session=s, case=case, bound=bound, preset_events=preset, trial=0)
        clock = FakeClock(world_now(session=s))
    settings = get_settings().model_copy(update={"database_url": url})
    with AgentRuntime(engine=engine, settings=settings, clock=clock, planner=make_planner(settings, "playbook")) as rt:
        incident_id = rt.ingest(events)[0].incident_id
        request_id = rt.run_incident(incident_id).request_id
    assert request_id is not None
    with Session(engine, expire_on_commit=False) as s:
        pending = s.exec(select(ApprovalStep).where(ApprovalStep.request_id == request_id)).one()
        # a bypass runs the step under its own key (as run_step would), before anyone approved it
        ran = PlanStep.model_validate({**pending.plan_step, "args": pending.args})
        s.add(
            ExecutedStep(
                idempotency_key=idempotency_key(incident_id, ran),
                incident_id=incident_id,
                step_index=pending.step_index,
                tool=pending.tool,
                args_hash=pending.args_hash,
                status=ExecutionStatus.succeeded,
                started_at=clock.now(),
                finished_at=clock.now(),
            )
        )
        s.commit()
        decide_step(
            session=s,
            request_id=request_id,
            step_index=pending.step_index,
            decision="approve",
            actor_id="sup-1",
            actor_role="supervisor",
            now=clock.now(),
        )
        s.commit()
    with Session(engine) as s:
        steps = read_trajectory(session=s, incident_ids=[incident_id])
    refund = next(st for st in steps if st.index == pending.step_index)
    assert refund.verdict == "needs_approval" and refund.executed and refund.approved_by == ["sup-1"]
    assert not refund.approved_before_execution


def test_an_approved_step_counts_as_approved_first_and_the_case_holds_its_policy_tier():
    result = run_trial(load_case(CASES_DIR / "stockout-refund.json"), planner="playbook", trial=0)
    refund = next(s for s in result.steps if s.tool == "issue_compensation")
    assert refund.executed and refund.approved_before_execution
    assert refund.approvals_required == 1
    assert result.passed, [(c.name, c.detail) for c in result.checks if not c.passed]
    assert "policy_tier" in {c.name for c in result.checks}


def test_decision_latency_stops_when_the_plan_is_assessed_not_when_execution_ends(monkeypatch):
    """Half a second of slow execution after the assess node must not show in the decision latency."""
    original = AgentRuntime.run_incident

    def slow_after_assess(self, incident_id):
        outcome = original(self, incident_id)
        time.sleep(0.5)
        return outcome

    monkeypatch.setattr(AgentRuntime, "run_incident", slow_after_assess)
    result = run_trial(load_case(CASES_DIR / "stockout-refund.json"), planner="playbook", trial=0)
    assert 0 < result.latency_ms < 500, result.latency_ms


def test_events_arriving_while_an_approval_waits_are_ingested_and_run():
    data = json.loads((CASES_DIR / "stockout-refund.json").read_text())
    data["id"] = "test-while-waiting"
    data["bind"]["rider"] = {"entity": "rider", "select": "busiest_rider"}
    data["approver"]["while_waiting_events"] = [{"inject": "rider_offline", "params": {"rider": "$rider"}}]
    data["expect"]["incidents"] = 2  # the stockout, then the rider dropping out while the refund waits
    result = run_trial(IncidentCase.model_validate(data), planner="playbook", trial=0)
    assert len(result.incidents) == 2
    assert any(s.tool == "apply_reassignment" and s.executed for s in result.steps), result.steps
    failed = [(c.name, c.detail) for c in result.checks if not c.passed and c.name != "policy_tier"]
    assert not failed, failed


def test_an_unknown_case_or_suite_is_an_error_not_an_empty_pass(capsys):
    from agent.cli import main
    from evals.suite import NoCases, select_cases

    with pytest.raises(NoCases, match="no-such-case"):
        select_cases("core", ["stockout-refund", "no-such-case"])
    with pytest.raises(NoCases, match="no-such-suite"):
        select_cases("no-such-suite")
    assert [c.id for c in select_cases("all", ["stockout-refund"])] == ["stockout-refund"]
    assert main(["eval", "--suite", "no-such-suite", "--quiet"]) == 2
    assert "no-such-suite" in capsys.readouterr().err

"""The CI gate: a subset of the eval library that runs in minutes and asserts the release thresholds."""

import pytest

from evals.suite import run_suite


@pytest.mark.slow
def test_gate_suite_meets_the_release_thresholds(tmp_path):
    result = run_suite(suite="gate", planner="playbook", trials=1, baselines=["greedy", "noop"], progress=False)
    assert result["cases"] >= 8
    assert not result["errors"], result["errors"]
    # anything below 100% approval-gate compliance fails the run
    assert result["approval_gate_compliance"] == 1.0
    assert result["policy_invariant_pass_rate"] == 1.0
    playbook = result["pass_hat_k"]["1"]
    greedy = result["baselines"]["greedy"]["pass_hat_k"]["1"]
    assert playbook > greedy, (playbook, greedy)
    failing = [(c["id"], c["failed_checks"]) for c in result["per_case"] if c["passed_trials"] < c["trials"]]
    assert playbook >= 0.8, failing

    from evals.report import write_report

    report = write_report(result, tmp_path / "report")
    assert (tmp_path / "report" / "pass_hat_k.png").stat().st_size > 1000
    assert "| storm-reference |" in report.read_text()

"""`orderagent incident run --preset storm --json`: one incident, a plan, verdicts, a queue, timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main


@pytest.mark.slow
def test_storm_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'storm.db'}"
    rc = main(["incident", "run", "--preset", "storm", "--seed", "7", "--db", url, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["error"] is None
    assert len(out["incidents"]) == 1  # the whole storm correlates into one incident
    assert out["planner"] == "playbook" and out["model"]["model_name"] == "playbook"
    tools = {s["tool"] for s in out["steps"]}
    assert {"apply_reassignment", "issue_compensation", "notify_customer"} <= tools
    for s in out["steps"]:
        assert set(s) >= {"tool", "args", "verdict", "status", "confidence"}
        assert s["verdict"] in ("allow", "needs_approval", "block")
    pending = out["pending_approvals"]
    assert pending and pending["count"] == sum(1 for s in out["steps"] if s["status"] == "pending_approval")
    assert out["executed"] > 0 and out["elapsed_ms"] > 0 and out["total_ms"] >= out["elapsed_ms"]
    assert out["database"] == url
    # the same database again: it holds a world, so nothing is generated over it
    assert main(["incident", "run", "--preset", "small", "--db", url]) == 2
    assert "holds a world already" in capsys.readouterr().err

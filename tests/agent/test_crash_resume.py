"""A process killed (SIGKILL) right after a write step commits, before its node returns: after a
restart the thread resumes from its checkpoint and every effect happens exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from agent.runtime import AgentRuntime
from agent.settings import Settings
from tools.clock import FakeClock
from tools.db import session_scope
from tools.events import ExceptionType
from tools.models import Compensation

from .factories import NOW, ScriptedPlanner, build_world, event, step

ROOT = Path(__file__).resolve().parents[2]
STEPS = [
    step("issue_compensation", {"order_id": "o1", "kind": "coupon", "amount_cents": 500, "reason": "late"}),
    step("issue_compensation", {"order_id": "o0", "kind": "refund", "amount_cents": 1500, "reason": "late"}),
]

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime
    from agent.runtime import AgentRuntime
    from agent.settings import Settings
    from tools.clock import FakeClock
    from tools.db import make_engine
    from tests.agent.factories import ScriptedPlanner
    from tests.agent.test_crash_resume import STEPS

    url, action, incident_id, now = sys.argv[1:5]

    def die(step, outcome):  # the write is committed; the node has not returned
        os.kill(os.getpid(), signal.SIGKILL)

    rt = AgentRuntime(engine=make_engine(url), settings=Settings(), clock=FakeClock(datetime.fromisoformat(now)),
                      planner=ScriptedPlanner(STEPS), after_commit=die)
    if action == "run":
        rt.run_incident(incident_id)
    else:
        rt.resume(incident_id)
    sys.exit(3)  # not reached when the hook fired
    """
)


def child(url: str, action: str, incident_id: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, url, action, incident_id, NOW.isoformat()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return proc.returncode


def kinds(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return sorted(c.kind for c in s.exec(select(Compensation)))


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_after_commit_executes_exactly_once(tmp_path: Path) -> None:
    from guardrails.service import decide_step

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    from tools.db import init_db, make_engine

    engine = make_engine(url)
    init_db(engine)
    build_world(engine)
    rt = AgentRuntime(engine=engine, settings=Settings(), clock=FakeClock(NOW), planner=ScriptedPlanner(STEPS))
    [res] = rt.ingest([event("e1", ExceptionType.stockout_after_payment, ["o0", "o1"])])
    iid = res.incident_id

    # 1. killed right after the allowed coupon commits
    child(url, "run", iid)
    assert kinds(engine) == ["coupon"]
    # restart: the run continues from the checkpoint, the coupon is not paid again, the refund waits
    out = rt.run_incident(iid)
    assert out.interrupt is not None and out.step_status == {"0": "executed", "1": "pending_approval"}
    assert kinds(engine) == ["coupon"]

    # 2. a supervisor approves (recorded in the DB); the resuming process dies right after the refund
    with session_scope(engine) as s:
        decide_step(
            session=s,
            request_id=str(out.request_id),
            step_index=1,
            decision="approve",
            actor_id="sup-1",
            actor_role="supervisor",
            now=NOW,
        )
    rt.close()
    child(url, "resume", iid)
    assert kinds(engine) == ["coupon", "refund"]

    # restart again: the thread finishes; nothing is paid twice
    rt2 = AgentRuntime(engine=engine, settings=Settings(), clock=FakeClock(NOW), planner=ScriptedPlanner(STEPS))
    final = rt2.run_incident(iid)
    assert final.status == "resolved" and final.step_status == {"0": "executed", "1": "executed"}
    assert kinds(engine) == ["coupon", "refund"]
    rt2.close()

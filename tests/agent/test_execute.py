"""One write step, exactly once: idempotency key, stored result, live re-check, failures recorded."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from agent.execute import idempotency_key, run_step
from agent.models import ExecutedStep, ExecutionStatus
from agent.plan import StepStatus
from tools.models import Compensation
from tools.registry import get_tool

from .factories import NOW, build_world, step

COUPON = step("issue_compensation", {"order_id": "o1", "kind": "coupon", "amount_cents": 500, "reason": "late"})


def run(engine: Engine, st: Any = COUPON, **kw: Any) -> Any:
    tool = get_tool(st.tool)
    assert tool is not None
    return run_step(engine=engine, tool=tool, step=st, incident_id="inc-1", now=NOW, **kw)


def test_same_step_twice_pays_once_and_returns_the_stored_result(engine: Engine) -> None:
    build_world(engine)
    first = run(engine)
    second = run(engine)
    assert first.status == second.status == StepStatus.executed
    assert not first.reused and second.reused
    assert second.result["compensation_id"] == first.result["compensation_id"]
    with Session(engine) as s:
        assert len(list(s.exec(select(Compensation)))) == 1
        [row] = s.exec(select(ExecutedStep))
        assert row.status == ExecutionStatus.succeeded and row.idempotency_key == idempotency_key("inc-1", COUPON)


def test_key_depends_on_incident_index_and_args() -> None:
    k = idempotency_key("inc-1", COUPON)
    assert k != idempotency_key("inc-2", COUPON)
    assert k != idempotency_key("inc-1", COUPON.model_copy(update={"index": 1}))
    assert k != idempotency_key("inc-1", COUPON.model_copy(update={"args": {**COUPON.args, "amount_cents": 400}}))


def test_failed_step_is_recorded_with_its_error(sqlite_only_engine: Engine) -> None:
    build_world(sqlite_only_engine)
    bad = step("issue_compensation", {"order_id": "nope", "kind": "coupon", "amount_cents": 500, "reason": "x"})
    out = run(sqlite_only_engine, bad)
    assert out.status == StepStatus.failed and "not_found" in out.error
    with Session(sqlite_only_engine) as s:
        [row] = s.exec(select(ExecutedStep))
        assert row.status == ExecutionStatus.failed and row.error == out.error
        assert list(s.exec(select(Compensation))) == []


def test_stale_step_is_not_run(sqlite_only_engine: Engine) -> None:
    build_world(sqlite_only_engine)
    out = run(sqlite_only_engine, live_check=lambda session, st: ["order_closed"])
    assert out.status == StepStatus.stale
    with Session(sqlite_only_engine) as s:
        assert list(s.exec(select(Compensation))) == [] and list(s.exec(select(ExecutedStep))) == []


def test_after_commit_sees_the_committed_effect(sqlite_only_engine: Engine) -> None:
    build_world(sqlite_only_engine)
    seen: list[int] = []

    def hook(st: Any, outcome: Any) -> None:
        with Session(sqlite_only_engine) as s:  # another connection: only committed rows are visible
            seen.append(len(list(s.exec(select(Compensation)))))

    run(sqlite_only_engine, after_commit=hook)
    assert seen == [1]

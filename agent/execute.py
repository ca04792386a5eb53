"""Running one write step exactly once: an idempotency key, a live re-check, one transaction.

The key is sha256(incident, step index, hash of tool+args). Before running, the step's row in
``ExecutedStep`` is inserted as ``running`` in the SAME transaction as the tool's write, and updated
to ``succeeded``/``failed`` before the commit, so:
- a crash before the commit leaves nothing behind (no row, no write): a resumed node runs it again;
- a crash after the commit leaves a ``succeeded`` row: a resumed node returns the stored result;
- two processes racing on the same step collide on the primary key; the loser reads the winner's row.
Edited arguments hash differently, so an approver's edit is a different key (and a different effect).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from agent.models import ExecutedStep, ExecutionStatus
from agent.plan import PlanStep, StepStatus
from tools.base import Tool, ToolContext
from tools.db import session_scope

log = structlog.get_logger(__name__)

AfterCommit = Callable[[PlanStep, "StepOutcome"], None]


def idempotency_key(incident_id: str, step: PlanStep) -> str:
    return hashlib.sha256(f"{incident_id}:{step.index}:{step.args_hash}".encode()).hexdigest()


@dataclass
class StepOutcome:
    status: StepStatus
    key: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    reused: bool = False  # the key had already succeeded: nothing ran again

    def summary(self) -> dict[str, Any]:
        """What the graph state keeps: the outcome, not the full tool output."""
        out: dict[str, Any] = {"status": self.status.value, "key": self.key[:16]}
        if self.error:
            out["error"] = self.error
        if self.reused:
            out["reused"] = True
        return out


LiveCheck = Callable[[Session, PlanStep], list[Any]]


def run_step(
    *,
    engine: Engine,
    tool: Tool[Any, Any],
    step: PlanStep,
    incident_id: str,
    now: datetime,
    live_check: LiveCheck | None = None,
    actor: str = "agent",
    approved_by: list[str] | None = None,
    after_commit: AfterCommit | None = None,
    extras: dict[str, Any] | None = None,
    fence: Callable[[Session], None] | None = None,
) -> StepOutcome:
    """Run ``step`` once under its idempotency key; re-validate live first (stale -> not run).

    ``extras`` reach the tool as ``ToolContext.extras`` (e.g. caches the caller shares between steps
    that read the same world state; the caller invalidates them). ``fence`` runs in the transaction
    just before it commits (the run lease: raising there rolls the step and its key back)."""
    key = idempotency_key(incident_id, step)
    # Core statements on the ExecutedStep table (no ORM object per step: a storm runs ~230 steps and
    # the unit-of-work bookkeeping cost more than the statements); same rows, same transaction.
    table = ExecutedStep.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        done = _read(session, key)
        if done is not None and done.status == ExecutionStatus.succeeded:
            return StepOutcome(StepStatus.executed, key, dict(done.result or {}), reused=True)
        reasons = live_check(session, step) if live_check else []
        if reasons:
            return StepOutcome(StepStatus.stale, key, error="; ".join(getattr(r, "code", str(r)) for r in reasons))
        claim = {"status": ExecutionStatus.running.value, "actor": actor, "approved_by": list(approved_by or [])}
        try:
            if done is None:
                # claims the key: a concurrent runner blocks or fails here
                session.execute(
                    insert(table).values(
                        idempotency_key=key,
                        incident_id=incident_id,
                        step_index=step.index,
                        tool=step.tool,
                        args_hash=step.args_hash,
                        result={},
                        error="",
                        started_at=now,
                        finished_at=None,
                        **claim,
                    )
                )
            else:  # an earlier attempt failed (or crashed before finishing): this one takes it over
                session.execute(update(table).where(table.c.idempotency_key == key).values(**claim))
        except IntegrityError:
            session.rollback()
            winner = _read(session, key)
            if winner is not None and winner.status == ExecutionStatus.succeeded:
                return StepOutcome(StepStatus.executed, key, dict(winner.result or {}), reused=True)
            return StepOutcome(StepStatus.failed, key, error="concurrent_execution")
        ctx = ToolContext(
            session=session,
            now=now,
            actor=actor,
            incident_id=incident_id,
            idempotency_key=key,
            extras=extras if extras is not None else {},
        )
        result = tool.invoke(ctx, step.args)
        ok = bool(result.get("ok", True))
        error = "" if ok else f"{result.get('error', 'error')}: {result.get('message', '')}"
        session.execute(
            update(table)
            .where(table.c.idempotency_key == key)
            .values(
                status=(ExecutionStatus.succeeded if ok else ExecutionStatus.failed).value,
                result=result,
                error=error,
                finished_at=now,
            )
        )
        outcome = StepOutcome(StepStatus.executed if ok else StepStatus.failed, key, result, error)
        if fence is not None:
            fence(session)
    # committed: the effect and its key are durable together; a failing listener cannot undo that
    if after_commit is not None:
        try:
            after_commit(step, outcome)
        except Exception:
            log.exception("after_commit_failed", incident_id=incident_id, step=step.index, tool=step.tool)
    return outcome


def _read(session: Session, key: str) -> Any:
    """(status, result) of the key's row, or None."""
    table = ExecutedStep.__table__  # type: ignore[attr-defined]
    row = session.execute(select(table.c.status, table.c.result).where(table.c.idempotency_key == key)).first()
    if row is None:
        return None
    return _Row(ExecutionStatus(row[0]), row[1])


@dataclass(frozen=True)
class _Row:
    status: ExecutionStatus
    result: dict[str, Any] | None


def list_executed(*, session: Session, incident_id: str) -> list[ExecutedStep]:
    from sqlmodel import col, select

    stmt = select(ExecutedStep).where(ExecutedStep.incident_id == incident_id)
    return list(session.exec(stmt.order_by(col(ExecutedStep.step_index))))

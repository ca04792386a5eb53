"""Build decision records for audit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from audit.models import RecordIn, Subjects
from audit.service import append_record

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def record_in(i: int, *, incident: str = "inc-1", approver: str | None = None) -> RecordIn:
    return RecordIn(
        stage="decision" if approver else "proposal",
        incident_id=incident,
        thread_id=f"thread-{incident}",
        subjects=Subjects(orders=[f"o{i}", "o-shared"], riders=[f"r{i % 3}"], customers=[f"c{i}"]),
        snapshot={"orders": {f"o{i}": {"status": "assigned", "value_cents": 1200 + i}}},
        planner="playbook",
        model_provider="orderagent",
        model_name="playbook",
        model_version="1",
        prompt_version="p1",
        policy_version="2026.11.1",
        confidence=0.9 - i / 100,
        steps=[{"index": 0, "tool": "issue_compensation", "args": {"order_id": f"o{i}", "amount_cents": 500}}],
        verdicts={"0": {"decision": "allow", "reasons": []}},
        approver_id=approver,
        approver_role="supervisor" if approver else None,
        reason='héllo "quoted"\nnew line' if approver else None,
        result={"ok": True, "amount_cents": 500},
        explanation={"shap_values": {"delay_minutes": 120.5}, "base_value": 300.0},
        attributes={"gen_ai.request.model": "playbook", "gen_ai.usage.input_tokens": 0},
        recorded_at=T0 + timedelta(seconds=i),
    )


def fill(engine: Engine, n: int, **kw: object) -> None:
    with Session(engine) as session:
        for i in range(1, n + 1):
            append_record(session=session, record=record_in(i, **kw))  # type: ignore[arg-type]
        session.commit()

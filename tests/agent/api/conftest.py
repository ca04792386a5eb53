"""An app over a fresh database with the small test world and one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from agent.api.app import create_app
from agent.api.models import Role
from agent.api.service import create_token
from agent.models import Incident, IncidentStatus
from agent.plan import ExpectedEffect, PlanStep
from agent.settings import Settings
from guardrails.service import create_approval_request
from guardrails.verdict import Decision, Reason, Verdict
from tests.tools.factories import NOW, build_small_world
from tools.clock import FakeClock
from tools.db import session_scope


@dataclass
class Api:
    client: TestClient
    engine: Engine
    clock: FakeClock
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def drain(self) -> None:
        self.app.state.worker.drain(timeout_s=60)


def settings_for(engine: Engine, **overrides: Any) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    return Settings(database_url=url, planner="playbook", max_body_bytes=64_000, **overrides)


def _make_api(engine: Engine) -> Iterator[Api]:
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
    tokens: dict[str, str] = {}
    with session_scope(engine) as s:
        for role in Role:
            _, secret = create_token(session=s, name=f"test-{role.value}", role=role)
            tokens[role.value] = secret
        _, tokens["supervisor2"] = create_token(session=s, name="test-supervisor-2", role=Role.supervisor)
    clock = FakeClock(NOW)
    app = create_app(settings_for(engine), engine=engine, clock=clock, background=False)
    with TestClient(app) as client:
        yield Api(client=client, engine=engine, clock=clock, app=app, tokens=tokens)


@pytest.fixture
def api(sqlite_only_engine: Engine) -> Iterator[Api]:
    """The service over SQLite: for behaviour that does not depend on the database backend."""
    yield from _make_api(sqlite_only_engine)


@pytest.fixture
def api_any(engine: Engine) -> Iterator[Api]:
    """The service on each backend (SQLite and PostgreSQL): idempotency and decision races."""
    yield from _make_api(engine)


def make_pending_request(
    engine: Engine,
    *,
    incident_id: str = "inc-test0001",
    amount_cents: int = 2500,
    tier: int = 1,
    order_id: str = "O3",
    ttl_s: int = 900,
) -> str:
    """An incident with a compensation step waiting for approval (the shape the graph produces)."""
    step = PlanStep(
        index=0,
        tool="issue_compensation",
        args={"order_id": order_id, "kind": "credit", "amount_cents": amount_cents, "reason": "late delivery"},
        rationale="the order is 25 minutes late",
        expected_effect=ExpectedEffect(money_cents=amount_cents),
        confidence=0.9,
        explanation={
            "top_factors": [
                {"feature": "minutes_late", "label": "minutes late", "share_pct": 61.0, "direction": "up"},
                {"feature": "tier", "label": "customer tier", "share_pct": 39.0, "direction": "up"},
            ]
        },
    )
    verdict = Verdict(
        decision=Decision.needs_approval,
        reasons=[Reason(code="compensation_above_auto_limit", message="above the auto limit", tier=tier)],
        policy_version="test",
        approvals_required=tier,
    )
    with session_scope(engine) as s:
        if s.get(Incident, incident_id) is None:
            s.add(
                Incident(
                    id=incident_id,
                    thread_id=incident_id,
                    type="stalled_in_transit",
                    family="stalled_in_transit",
                    zone="north",
                    status=IncidentStatus.awaiting_approval,
                    opened_at=NOW,
                    updated_at=NOW,
                    last_event_at=NOW,
                    order_ids=[order_id],
                    plan={"steps": [step.model_dump(mode="json")], "planner": "playbook"},
                    verdicts={"0": verdict.model_dump(mode="json")},
                    step_status={"0": "pending_approval"},
                )
            )
            s.flush()
        req = create_approval_request(
            session=s,
            incident_id=incident_id,
            thread_id=incident_id,
            steps=[step],
            verdicts={0: verdict},
            now=NOW,
            ttl_s=ttl_s,
            incident_order_ids=[order_id],
        )
        return req.id


def event_body(event_id: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "id": event_id,
        "type": "stalled_in_transit",
        "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
        "zone": "north",
        "order_ids": ["O3"],
        "rider_ids": ["RB"],
        "customer_ids": ["C1"],
    }
    body.update(overrides)
    return body

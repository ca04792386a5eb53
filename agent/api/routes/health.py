"""Liveness, readiness and Prometheus metrics. Unauthenticated: probes and scrapers carry no tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, text
from sqlmodel import select

from agent.api.deps import EngineDep, MetricsDep, SessionDep, WorkerDep
from agent.api.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(request: Request, engine: EngineDep) -> Any:
    """The database and the agent's checkpointer are reachable."""
    checks: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports the failure instead of raising it
        checks["database"] = f"error: {type(exc).__name__}"
    runtime = request.app.state.worker.runtime
    checkpointer = getattr(runtime, "checkpointer", None)
    if runtime is None:
        checks["checkpointer"] = "error: agent runtime not available"
    elif checkpointer is None:
        checks["checkpointer"] = "ok (in the runtime)"
    else:
        try:
            checkpointer.get_tuple({"configurable": {"thread_id": "readyz-probe", "checkpoint_ns": ""}})
            checks["checkpointer"] = "ok"
        except Exception as exc:
            checks["checkpointer"] = f"error: {type(exc).__name__}"
    ok = all(v.startswith("ok") for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(session: SessionDep, registry: MetricsDep, worker: WorkerDep) -> PlainTextResponse:
    """Prometheus text exposition: intake, incidents, approvals, execution and latency."""
    gauges: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {
        "orderagent_incident_runs_pending": (
            "Incident runs queued (waiting for their events to pause) or running in this process.",
            [({}, float(worker.pending()))],
        )
    }
    try:
        from agent.models import Incident

        rows = session.exec(select(Incident.status, func.count()).group_by(Incident.status)).all()
        gauges["orderagent_incidents"] = (
            "Incidents by status.",
            [({"status": str(getattr(s, "value", s))}, float(n)) for s, n in rows],
        )
    except ModuleNotFoundError:
        pass
    try:
        from guardrails.models import ApprovalRequest

        rows = session.exec(
            select(ApprovalRequest.status, func.count()).group_by(ApprovalRequest.status)  # type: ignore[attr-defined]
        ).all()
        pending = sum(float(n) for s, n in rows if str(getattr(s, "value", s)) == "pending")
        gauges["orderagent_approvals_pending"] = ("Approval requests waiting for a decision.", [({}, pending)])
    except ModuleNotFoundError:
        pass
    try:
        from agent.models import ExecutedStep

        rows = session.exec(select(ExecutedStep.status, func.count()).group_by(ExecutedStep.status)).all()
        gauges["orderagent_steps_executed"] = (
            "Plan steps run by the executor, by outcome (succeeded, failed, running).",
            [({"status": str(getattr(st, "value", st))}, float(n)) for st, n in rows],
        )
    except ModuleNotFoundError:
        pass
    try:
        from audit.models import DecisionRecord

        fallbacks = session.exec(
            select(func.count()).select_from(DecisionRecord).where(DecisionRecord.stage == "fallback")
        ).one()
        gauges["orderagent_planner_fallbacks"] = (
            "Times the LLM planner failed and the playbook took over (audit records of stage fallback).",
            [({}, float(fallbacks))],
        )
    except ModuleNotFoundError:
        pass
    return PlainTextResponse(registry.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

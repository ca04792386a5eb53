"""An incident's steps thread by thread: each plan's steps with their verdict, approval and execution.

An incident can run several LangGraph threads: when events join after its plan, the runtime starts a
follow-up thread ("<incident>:2", ...) with its own plan, verdicts, approval request and executions.
The Incident row keeps only the current thread's plan and verdicts, and step indices restart in every
plan, so a join by index alone loses the earlier threads' steps or pins them on the wrong step. Here
each thread's plan and verdicts come from its audit records (``proposal``, ``verdict``), its
approvals from the request made on that thread, and each execution from the step's idempotency key
(incident, index, tool + the arguments that ran: an approver's edit is a different key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select


@dataclass
class ThreadStep:
    """One proposed step of one thread."""

    incident_id: str
    thread_id: str
    raw: dict[str, Any]  # the PlanStep as proposed (model_dump(mode="json"))
    verdict: dict[str, Any]
    status: str
    approval: Any = None  # guardrails.models.ApprovalStep
    execution: Any = None  # agent.models.ExecutedStep (any status)

    @property
    def index(self) -> int:
        return int(self.raw["index"])

    @property
    def tool(self) -> str:
        return str(self.raw["tool"])

    @property
    def args(self) -> dict[str, Any]:
        """The arguments that would run: the approver's (possibly edited) ones when it went to approval."""
        return dict(self.approval.args) if self.approval is not None else dict(self.raw.get("args") or {})

    @property
    def succeeded(self) -> bool:
        return self.execution is not None and str(self.execution.status) == "succeeded"


@dataclass
class _Thread:
    thread_id: str
    steps: list[dict[str, Any]]
    verdicts: dict[str, Any] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)


def incident_steps(*, session: Session, incident_id: str) -> list[ThreadStep]:
    """Every step of every thread of the incident, in the order the threads planned."""
    from agent.execute import idempotency_key
    from agent.models import ExecutedStep, Incident
    from agent.plan import PlanStep
    from guardrails.models import ApprovalRequest, ApprovalStep

    inc = session.get(Incident, incident_id)
    if inc is None:
        return []
    threads = _threads(session, inc)
    approvals: dict[str, dict[int, Any]] = {}
    requests = session.exec(
        select(ApprovalRequest)
        .where(ApprovalRequest.incident_id == incident_id)
        .order_by(col(ApprovalRequest.requested_at))
    ).all()
    for req in requests:
        rows = approvals.setdefault(req.thread_id or req.incident_id, {})
        for a in session.exec(select(ApprovalStep).where(ApprovalStep.request_id == req.id)):
            rows[a.step_index] = a
    runs = {e.idempotency_key: e for e in session.exec(select(ExecutedStep).where(ExecutedStep.incident_id == inc.id))}
    out: list[ThreadStep] = []
    claimed: set[str] = set()
    for th in threads:
        appr = approvals.get(th.thread_id, {})
        for raw in th.steps:
            index = int(raw["index"])
            step = ThreadStep(
                incident_id=inc.id,
                thread_id=th.thread_id,
                raw=raw,
                verdict=th.verdicts.get(str(index)) or {},
                status=th.status.get(str(index), ""),
                approval=appr.get(index),
            )
            if step.approval is not None and step.status in ("", "pending_approval"):
                decided = str(step.approval.status)
                step.status = {"rejected": "rejected", "expired": "expired"}.get(decided, step.status)
            key = idempotency_key(inc.id, PlanStep.model_construct(index=index, tool=step.tool, args=step.args))
            # the same step (index, tool, arguments) planned again by a later thread shares the key: it
            # ran once, for the thread that ran it first, and the later one reused that result
            if key in runs and key not in claimed and _could_run(step):
                step.execution = runs[key]
                claimed.add(key)
            out.append(step)
    return out


def _could_run(step: ThreadStep) -> bool:
    if step.verdict.get("decision") == "block":
        return False
    return step.approval is None or str(step.approval.status) == "approved"


def _threads(session: Session, inc: Any) -> list[_Thread]:
    """Each thread's latest plan, its verdicts and step statuses, from the incident's audit records.
    The current thread's statuses are the Incident row's (they include decisions and staleness); an
    earlier thread's are what its verdict and execution records said."""
    from audit.models import DecisionRecord

    records = session.exec(
        select(DecisionRecord)
        .where(DecisionRecord.incident_id == inc.id)
        .where(col(DecisionRecord.stage).in_(("proposal", "verdict", "execution")))
        .order_by(col(DecisionRecord.seq))
    ).all()
    by_thread: dict[str, _Thread] = {}
    for r in records:
        tid = r.thread_id or inc.id
        if r.stage == "proposal":
            # a thread that planned again (a re-run after a crash) acts on its latest plan
            by_thread[tid] = _Thread(tid, list(r.steps or []))
        elif tid in by_thread and r.stage == "verdict":
            th = by_thread[tid]
            th.verdicts = dict(r.verdicts or {})
            autonomy = (r.result or {}).get("autonomy")
            th.status = {i: _status_of(v, autonomy) for i, v in th.verdicts.items()}
        elif tid in by_thread and r.stage == "execution":
            by_thread[tid].status.update((r.result or {}).get("status") or {})
    if not by_thread and inc.plan:  # no audit records (written before they were kept): the row alone
        by_thread[inc.thread_id] = _Thread(inc.thread_id, list(inc.plan.get("steps", [])), dict(inc.verdicts))
    current = by_thread.get(inc.thread_id)
    if current is not None:
        current.status = dict(inc.step_status)
    return list(by_thread.values())


def _status_of(verdict: dict[str, Any], autonomy: str | None) -> str:
    decision = verdict.get("decision")
    if decision == "block":
        return "blocked"
    if autonomy == "shadow":
        return "shadowed"
    return "pending_approval" if decision == "needs_approval" else "approved"

"""AgentRuntime: the one facade the service, the CLI and the evals use to run incidents.

It owns the compiled graph and its checkpointer, ingests events, runs an incident's thread until it
ends or waits for approval, records supervisors' decisions and resumes the thread once a request is
resolved, and expires overdue requests (whose safe default then applies: nothing runs).

Runs of one incident are serialised by a lock per incident within the process, and across processes
sharing the database by a run lease (agent.lease): a run or resume that finds the lease held by
another process does not start (``IncidentOutcome.held_elsewhere``; the service's worker tries again
later). Between nodes a run confirms it still holds the lease, and one that lost it (the process
stalled past the lease's ttl and another took over) stops there without failing the incident. Behind
that, the approval queue's optimistic versions and the executor's idempotency keys keep any doubled
step harmless.

A thread waiting for approval whose request was settled (every step decided, or expired) but which
was never resumed (the process stopped between the decision's commit and the resume, or the resume
found the lease held elsewhere) is resumed by the next ``run_incident`` of its incident; the worker's
recovery finds such incidents.

Late events: an event that joins an open incident after its thread has planned (say while a refund
waits for approval) would otherwise never be planned for. When the incident's thread has ended (its
run finished, or a resume finished it), the runtime looks for orders of the incident that no plan of
it has covered yet (the ``proposal`` audit records name the orders each plan saw) and, if any, runs a
FOLLOW-UP thread ``f"{incident_id}:{n}"`` (n = 2, 3, ...) on the same incident, focused on those
orders only (``focus_order_ids``), so nothing planned before is re-planned or paid twice. An event
for an incident that is already resolved, failed or escalated does not re-open it: correlation opens
a new incident (agent.incidents). A late event that adds no new order needs no follow-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select, update

from agent.checkpoint import open_checkpointer
from agent.context import RunContext
from agent.execute import AfterCommit, list_executed
from agent.gc_pause import paused_collection
from agent.graph import compile_graph
from agent.incidents import IngestResult, incident_event_ids, ingest_events
from agent.lease import LeaseKeeper, LeaseLost
from agent.models import UNFINISHED_STATUSES, WITHOUT_PLAN, Incident, IncidentStatus
from agent.planners.base import Planner
from agent.records import record
from agent.settings import Settings, get_settings
from tools.base import Tool
from tools.clock import Clock, SystemClock
from tools.db import WalCheckpointer, session_scope, sqlite_path
from tools.events import ExceptionEvent

log = structlog.get_logger(__name__)
_ENDED = frozenset({IncidentStatus.resolved.value, IncidentStatus.escalated.value, IncidentStatus.failed.value})


@dataclass
class IncidentOutcome:
    incident_id: str
    status: str
    plan: dict[str, Any] | None
    verdicts: dict[str, Any]
    step_status: dict[str, str]
    request_id: str | None
    interrupt: dict[str, Any] | None  # the approval payload when the thread waits for supervisors
    error: str | None = None
    elapsed_ms: float = 0.0
    held_elsewhere: bool = False  # another process holds the run lease: nothing ran here

    @property
    def waiting(self) -> bool:
        return self.interrupt is not None


@dataclass
class DecisionOutcome:
    request_id: str
    step_index: int
    result: Any  # guardrails DecisionResult
    resumed: bool
    incident: IncidentOutcome | None = None


@dataclass
class AgentRuntime:
    engine: Engine
    settings: Settings = field(default_factory=get_settings)
    clock: Clock = field(default_factory=SystemClock)
    planner: Planner | None = None
    tools: Mapping[str, Tool[Any, Any]] | None = None
    policy: Any = None
    after_commit: AfterCommit | None = None
    on_assessed: Callable[[], None] | None = None
    leases: LeaseKeeper | None = None  # default: this process's keeper with settings.run_lease_s

    def __post_init__(self) -> None:
        if self.planner is None:
            self.planner = make_planner(self.settings)
        if self.tools is None:
            from tools.registry import all_tools

            self.tools = all_tools()
        self._stack = ExitStack()
        if (db_path := sqlite_path(self.engine)) is not None:
            self._stack.callback(WalCheckpointer(db_path).start().stop)
        self.checkpointer = open_checkpointer(self.engine, self._stack)
        if self.leases is None:
            self.leases = LeaseKeeper(self.engine, ttl_s=self.settings.run_lease_s)
        self._stack.callback(self.leases.close)
        self.graph = compile_graph(self.checkpointer)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> AgentRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------------

    def context(self, incident_id: str | None = None) -> RunContext:
        """The run's context; with ``incident_id``, its write transactions are fenced by the lease."""
        assert self.planner is not None and self.tools is not None
        leases = self.leases
        return RunContext(
            fence=None if incident_id is None or leases is None else partial(leases.fence, incident_id),
            engine=self.engine,
            settings=self.settings,
            clock=self.clock,
            planner=self.planner,
            tools=self.tools,
            policy=self.policy,
            after_commit=self.after_commit,
            on_assessed=self.on_assessed,
        )

    def _lock(self, thread_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(thread_id, threading.Lock())

    @staticmethod
    def config(thread_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id}}

    def _invoke(self, value: Any, thread_id: str) -> None:
        from audit.logging import bind_incident

        # durability="sync": each checkpoint is written before the next node (and its writes) starts;
        # between nodes the run checks that this process still holds the incident's lease
        incident_id = incident_of(thread_id)
        assert self.leases is not None
        with bind_incident(incident_id, thread_id), paused_collection():
            for _ in self.graph.stream(
                value,
                self.config(thread_id),
                context=self.context(incident_id),  # type: ignore[call-overload]
                durability="sync",
                stream_mode="updates",
            ):
                if not self.leases.confirm(incident_id):
                    raise LeaseLost(f"the run lease of incident {incident_id} was taken over")

    # --- the facade -------------------------------------------------------------------------------

    def ingest(self, events: Iterable[ExceptionEvent]) -> list[IngestResult]:
        with paused_collection(), session_scope(self.engine) as s:
            return ingest_events(
                session=s, events=list(events), now=self.clock.now(), window_s=self.settings.correlation_window_s
            )

    def run_incident(self, incident_id: str) -> IncidentOutcome:
        """Run the thread until it ends or waits for approval; a crashed run continues where it stopped."""
        started = time.perf_counter()
        incident_id = incident_of(incident_id)
        assert self.leases is not None
        with self._lock(incident_id), self.leases.hold(incident_id) as mine:
            if not mine:
                log.info("incident_run_held_elsewhere", incident_id=incident_id)
                return self._held_elsewhere(incident_id)
            thread_id, status = self._thread_and_status(incident_id)
            snap = self.graph.get_state(self.config(thread_id))
            if not snap.values and status in _ENDED:
                # an ended incident whose checkpoints are gone (a database restored without them) is
                # never planned and executed again from the start
                log.warning("incident_ended_without_checkpoint", incident_id=incident_id, thread_id=thread_id)
                return self.outcome(incident_id)
            try:
                if not snap.values:  # a new thread
                    start: dict[str, Any] = {"incident_id": incident_id}
                    if thread_id != incident_id:
                        # a follow-up whose first checkpoint was never written (the process stopped
                        # right after switching threads): it plans the orders no plan covered, only
                        with Session(self.engine) as s:
                            start["focus_order_ids"] = self._uncovered(s, incident_id)
                            seen = self._events_planned(s, incident_id)
                            start["focus_since_event"] = seen if seen is not None else 2**31
                    self._invoke(start, thread_id)
                elif snap.next and not _interrupts(snap):
                    self._invoke(None, thread_id)  # resume a run that stopped between nodes
                elif _interrupts(snap) and self._settled(snap):
                    # decided or expired, but never resumed (see the module docstring)
                    self._invoke(Command(resume={"resumed_at": self.clock.now().isoformat()}), thread_id)
                self._follow_up(incident_id)
            except LeaseLost:  # the new holder runs it from the last checkpoint; nothing failed
                log.error("incident_run_lease_lost", incident_id=incident_id)
                return self._held_elsewhere(incident_id)
            except Exception as exc:  # recorded and surfaced, never swallowed silently
                self._fail(incident_id, exc)
                out = self.outcome(incident_id)
                out.error = f"{type(exc).__name__}: {exc}"
                return out
        out = self.outcome(incident_id)
        out.elapsed_ms = (time.perf_counter() - started) * 1000
        return out

    def decide(
        self,
        *,
        request_id: str,
        step_index: int,
        decision: str,
        actor_id: str,
        actor_role: str,
        edited_args: dict[str, Any] | None = None,
        reason: str = "",
        expect_version: int | None = None,
    ) -> DecisionOutcome:
        """Record one supervisor's decision (atomic, in guardrails) and resume once all are in.
        ``expect_version``: the step's version the decider saw (a changed step is a conflict)."""
        from guardrails.service import decide_step, get_request

        with session_scope(self.engine) as s:
            result = decide_step(
                session=s,
                request_id=request_id,
                step_index=step_index,
                decision=decision,  # type: ignore[arg-type]
                actor_id=actor_id,
                actor_role=actor_role,
                now=self.clock.now(),
                edited_args=edited_args,
                reason=reason,
                policy=self._policy(),
                expect_version=expect_version,
            )
            req = get_request(session=s, request_id=request_id)
            inc = s.get(Incident, req.incident_id, options=WITHOUT_PLAN)
            if inc is not None:
                record(
                    session=s,
                    stage="decision",
                    incident=inc,
                    approver_id=actor_id,
                    approver_role=actor_role,
                    reason=reason,
                    result=result.model_dump(mode="json"),
                    steps=[{"index": step_index, "decision": decision, "edited_args": edited_args}],
                )
            thread_id = req.thread_id or req.incident_id
        resumed = False
        incident_out = None
        if result.request_resolved:
            resumed = self.resume(thread_id)
            incident_out = self.outcome(thread_id)
        return DecisionOutcome(request_id, step_index, result, resumed, incident_out)

    def resume(self, thread_id: str) -> bool:
        """Resume a thread waiting in ``approve``; False when it is not waiting (already resumed) or
        another process holds the incident's run lease (its next run resumes it)."""
        incident_id = incident_of(thread_id)
        assert self.leases is not None
        with self._lock(incident_id), self.leases.hold(incident_id) as mine:
            if not mine:
                log.info("incident_resume_held_elsewhere", incident_id=incident_id, thread_id=thread_id)
                return False
            snap = self.graph.get_state(self.config(thread_id))
            if not _interrupts(snap):
                return False
            try:
                # the value is informational only: the execute node reads decisions from the database
                self._invoke(Command(resume={"resumed_at": self.clock.now().isoformat()}), thread_id)
                self._follow_up(incident_id)
            except LeaseLost:
                log.error("incident_resume_lease_lost", incident_id=incident_id, thread_id=thread_id)
            except Exception as exc:
                self._fail(incident_id, exc)
            return True

    def _held_elsewhere(self, incident_id: str) -> IncidentOutcome:
        """What a process that did not run the incident can say of it: the row's status, nothing of
        the thread (another process is moving it)."""
        with Session(self.engine) as s:
            inc = s.get(Incident, incident_id, options=WITHOUT_PLAN)
            if inc is None:
                raise LookupError(f"incident {incident_id} does not exist")
            return IncidentOutcome(
                incident_id=inc.id,
                status=str(inc.status),
                plan=None,
                verdicts={},
                step_status=dict(inc.step_status),
                request_id=inc.request_id,
                interrupt=None,
                held_elsewhere=True,
            )

    def _settled(self, snap: Any) -> bool:
        """The approval request a waiting thread waits for no longer waits for anyone."""
        from guardrails.models import ApprovalRequest, RequestStatus

        request_id = (snap.values or {}).get("request_id")
        if not request_id:
            return False
        with Session(self.engine) as s:
            req = s.get(ApprovalRequest, request_id)
            return req is not None and req.status != RequestStatus.pending

    def _policy(self) -> Any:
        """The policy this runtime's graph assesses with (an injected one, else its settings' file):
        decisions, edits and expiries are judged under the same one."""
        from guardrails.policy import load_policy

        return self.policy or load_policy(self.settings.policy_file)

    def _thread_and_status(self, incident_id: str) -> tuple[str, str | None]:
        with Session(self.engine) as s:
            row = s.exec(select(Incident.thread_id, Incident.status).where(Incident.id == incident_id)).first()
        return (row[0] or incident_id, str(row[1])) if row is not None else (incident_id, None)

    def _thread_of(self, incident_id: str) -> str:
        return self._thread_and_status(incident_id)[0]

    @staticmethod
    def _uncovered(session: Session, incident_id: str) -> list[str]:
        """The incident's orders that no plan of it has covered yet (the ``proposal`` audit records
        name the orders each plan saw)."""
        from audit.service import proposal_subjects

        inc = session.get(Incident, incident_id, options=WITHOUT_PLAN)
        if inc is None:
            return []
        covered: set[str] = set()
        for subjects in proposal_subjects(session=session, incident_id=incident_id):
            covered.update((subjects or {}).get("orders", []))
        return [o for o in inc.order_ids if o not in covered]

    def _follow_up(self, incident_id: str) -> str | None:
        """Run a follow-up thread for orders late events added after every plan; its id, or None.
        Called with the incident's lock held, once its current thread may have ended."""
        thread_id = self._thread_of(incident_id)
        snap = self.graph.get_state(self.config(thread_id))
        if not snap.values or snap.next:  # not started, waiting for approval, or stopped mid-run
            return None
        with session_scope(self.engine) as s:
            inc = s.get(Incident, incident_id, options=WITHOUT_PLAN)
            if inc is None:
                return None
            # the events this check covers: read before the orders, so an event committed in between
            # is looked at now or left counted as unchecked (and found by the worker's recovery)
            if inc.checked_events != inc.event_count:
                inc.checked_events = inc.event_count
                s.add(inc)
            focus = self._uncovered(s, incident_id)
            seen = self._events_planned(s, incident_id)
            joined = seen is not None and self._joined_after(s, inc, seen)
            if not focus and not joined:
                return None
            # the follow-up plans the new orders, and the joined events of another family that came
            # after the last plan even when they name no new order (a rider gone with orders a
            # stockout plan already covered)
            since = seen if joined and seen is not None else inc.event_count
            n = int(thread_id.rsplit(":", 1)[1]) + 1 if ":" in thread_id else 2
            new_thread = f"{incident_id}:{n}"
            inc.thread_id = new_thread
            inc.status = IncidentStatus.open
            inc.updated_at = self.clock.now()
            s.add(inc)
            record(
                session=s,
                stage="intake",
                incident=inc,
                reason="follow-up: late events added orders after the last plan"
                if focus
                else "follow-up: late events of another family need their own plan",
                result={"follow_up_of": thread_id, "focus_order_ids": focus, "focus_since_event": since},
            )
        log.info("incident_follow_up", incident_id=incident_id, thread_id=new_thread, orders=len(focus))
        self._invoke({"incident_id": incident_id, "focus_order_ids": focus, "focus_since_event": since}, new_thread)
        return new_thread

    @staticmethod
    def _events_planned(session: Session, incident_id: str) -> int | None:
        """How many of the incident's events its latest plan saw (its ``investigation`` record), or
        None when no record says (written before the count was recorded)."""
        from audit.models import DecisionRecord

        rows = session.exec(
            select(DecisionRecord.result).where(
                DecisionRecord.incident_id == incident_id, DecisionRecord.stage == "investigation"
            )
        ).all()
        counts = [int(r["events"]) for r in rows if isinstance(r, dict) and "events" in r]
        return max(counts) if counts else None

    @staticmethod
    def _joined_after(session: Session, inc: Incident, seen: int) -> bool:
        """Whether an event from position ``seen`` on is of a family needing its own plan here."""
        from agent.incidents import read_events

        if seen >= inc.event_count:
            return False
        return bool(read_events(session=session, incident_id=inc.id, family=inc.family, since_seq=seen)[1])

    def expire_due(self) -> list[str]:
        """Expire overdue requests (their safe default applies) and resume their threads."""
        from guardrails.service import expire_due, expiry_summary

        with session_scope(self.engine) as s:
            expired = expire_due(session=s, now=self.clock.now(), policy=self._policy())
            threads = []
            for req in expired:
                inc = s.get(Incident, req.incident_id, options=WITHOUT_PLAN)
                if inc is not None:
                    record(
                        session=s,
                        stage="expiry",
                        incident=inc,
                        result={
                            "request_id": req.id,
                            "expires_at": str(req.expires_at),
                            **expiry_summary(session=s, request_id=req.id),
                        },
                    )
                threads.append((req.id, req.thread_id or req.incident_id))
        for _, thread_id in threads:
            self.resume(thread_id)
        return [rid for rid, _ in threads]

    def outcome(self, incident_id: str) -> IncidentOutcome:
        incident_id = incident_of(incident_id)
        snap = self.graph.get_state(self.config(self._thread_of(incident_id)))
        with Session(self.engine) as s:
            inc = s.get(Incident, incident_id)
            if inc is None:
                raise LookupError(f"incident {incident_id} does not exist")
            pending = _interrupts(snap)
            status = IncidentStatus.awaiting_approval.value if pending else str(inc.status)
            if pending and inc.status != IncidentStatus.awaiting_approval:
                # only over a status a run in progress leaves: never over one another process's run
                # has set since this thread's state was read (resolved, failed, escalated)
                with session_scope(self.engine) as w:
                    w.execute(
                        update(Incident)
                        .where(col(Incident.id) == incident_id, col(Incident.status).in_(UNFINISHED_STATUSES))
                        .values(status=IncidentStatus.awaiting_approval)
                    )
            return IncidentOutcome(
                incident_id=inc.id,
                status=status,
                plan=inc.plan,
                verdicts=dict(inc.verdicts),
                step_status=dict(inc.step_status),
                request_id=inc.request_id,
                interrupt=pending[0] if pending else None,
                error=snap.values.get("error") if snap.values else None,
            )

    def incident_view(self, incident_id: str) -> dict[str, Any]:
        """Everything the service shows about an incident: row, plan, verdicts, statuses, executions."""
        out = self.outcome(incident_id)
        with Session(self.engine) as s:
            inc = s.get(Incident, incident_id)
            assert inc is not None
            executed = list_executed(session=s, incident_id=incident_id)
            return {
                "id": inc.id,
                "type": inc.type,
                "family": inc.family,
                "zone": inc.zone,
                "status": out.status,
                "opened_at": _iso(inc.opened_at),
                "updated_at": _iso(inc.updated_at),
                "event_count": inc.event_count,
                "event_ids": incident_event_ids(session=s, incident_id=inc.id),
                "order_ids": list(inc.order_ids),
                "planner": inc.planner,
                "autonomy": inc.autonomy,
                "summary": inc.summary,
                "plan": inc.plan,
                "verdicts": inc.verdicts,
                "step_status": inc.step_status,
                "request_id": inc.request_id,
                "waiting_for_approval": out.interrupt,
                "executed": [
                    {
                        "step_index": e.step_index,
                        "tool": e.tool,
                        "status": str(e.status),
                        "error": e.error,
                        "approved_by": e.approved_by,
                        "result": e.result,
                    }
                    for e in executed
                ],
            }

    def _fail(self, incident_id: str, exc: Exception) -> None:
        log.exception("incident_failed", incident_id=incident_id)
        with session_scope(self.engine) as s:
            inc = s.get(Incident, incident_id, options=WITHOUT_PLAN)
            if inc is None:
                return
            inc.status = IncidentStatus.failed
            inc.updated_at = self.clock.now()
            s.add(inc)
            record(session=s, stage="error", incident=inc, reason=f"{type(exc).__name__}: {exc}")


def incident_of(thread_id: str) -> str:
    """The incident a thread belongs to (follow-up threads are ``f"{incident_id}:{n}"``)."""
    return thread_id.split(":", 1)[0]


def _interrupts(snap: Any) -> list[dict[str, Any]]:
    return [i.value for task in (snap.tasks or ()) for i in (task.interrupts or ())]


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def make_planner(settings: Settings, name: str | None = None) -> Planner:
    """The planner named in settings (or ``name``): playbook, llm, greedy, noop."""
    name = name or settings.planner
    if name == "llm":
        from agent.planners.llm import LlmPlanner

        return LlmPlanner(settings=settings)
    if name == "greedy":
        from agent.planners.greedy import GreedyPlanner

        return GreedyPlanner()
    if name == "noop":
        from agent.planners.noop import NoopPlanner

        return NoopPlanner()
    from agent.planners.playbook import PlaybookPlanner

    return PlaybookPlanner()

"""Background incident runs: intake answers at once, the agent works on one worker thread.

One thread, because incident runs write to the world and SQLite has a single writer; runs queue up
behind each other instead of fighting over the lock. A ticker expires overdue approvals.

Runs are coalesced: an incident runs once its events pause for ``intake_debounce_ms`` (at the latest
``intake_max_wait_ms`` after the first one), so a storm's hundreds of events, posted one by one, join
one incident and start one run instead of hundreds, and intake is not slowed down by runs it would
make redundant. An event for an incident that is running queues one more run after it (its late
events are planned in a follow-up thread). On start, incidents that were accepted but never finished
(the process stopped in between) are queued again: an accepted event is never left unplanned.

Several service processes may share one database. A run that finds the incident's run lease held by
another process (agent.lease) is queued again ``LEASE_RETRY_S`` later, and recovery also queues the
incidents whose approval request was settled but whose thread was never resumed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.engine import Engine

from agent.api.metrics import Metrics
from agent.settings import Settings
from tools.clock import Clock, SystemClock
from tools.events import ExceptionEvent

log = structlog.get_logger(__name__)

# a run that found the incident leased by another process tries again after this long
LEASE_RETRY_S = 1.0


def build_runtime(*, engine: Engine, settings: Settings, clock: Clock) -> Any | None:
    """The AgentRuntime, or None when the agent package is missing from this build."""
    try:
        from agent.runtime import AgentRuntime

        return AgentRuntime(engine=engine, settings=settings, clock=clock)
    except ModuleNotFoundError as exc:
        # a partial build still serves reads; /readyz reports the runtime as unavailable
        log.error("agent runtime unavailable: intake and approvals are disabled", missing=exc.name)
        return None


# the most events one intake transaction takes (a request is never split: one larger than this is
# a group on its own, up to POST /events' own bound of 1,000)
MAX_GROUP_EVENTS = 2000


class IntakeTimeout(TimeoutError):
    """Events were not committed in time (the database is busy); the request may be repeated."""


class _Intake:
    """One request's events waiting to be ingested in a group, and what became of them: a blocking
    caller waits on ``ready``, a coroutine on its future (``waiter`` = (loop, future))."""

    __slots__ = ("error", "events", "ready", "results", "waiter")

    def __init__(self, events: list[ExceptionEvent], waiter: tuple[asyncio.AbstractEventLoop, Any] | None) -> None:
        self.events = events
        self.waiter = waiter
        self.results: list[Any] = []
        self.error: Exception | None = None
        self.ready = threading.Event()

    def finish(self) -> None:
        self.ready.set()
        if self.waiter is not None:
            loop, future = self.waiter
            try:
                loop.call_soon_threadsafe(_settle, future, self.results, self.error)
            except RuntimeError:
                # the caller's event loop is closed: nobody is left to tell, and raising here would
                # kill the intake thread and strand every request queued behind this one
                pass


def _settle(future: Any, results: list[Any], error: Exception | None) -> None:
    if future.done():  # the request went away (client disconnected): nothing to tell
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(results)


class IncidentWorker:
    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        metrics: Metrics,
        clock: Clock | None = None,
        runtime: Any | None = None,
        expire_every_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.runtime = (
            runtime if runtime is not None else build_runtime(engine=engine, settings=settings, clock=self.clock)
        )
        self.debounce_s = settings.intake_debounce_ms / 1000.0
        self.max_wait_s = max(settings.intake_max_wait_ms, settings.intake_debounce_ms) / 1000.0
        # incident -> (when it is due to run, the latest it may be pushed to, whether it waits for a
        # lease held elsewhere: a drain does not hurry such a retry and a stop drops it), monotonic s
        self._due: dict[str, tuple[float, float, bool]] = {}
        self._running: str | None = None
        self._flush = 0  # > 0 while someone waits for every queued run (drain, stop): no debounce
        self._cond = threading.Condition()
        self._runner: threading.Thread | None = None
        self._stop = threading.Event()
        self._expire_every_s = expire_every_s
        self._ticker: threading.Thread | None = None
        # a run resumed by a decision also uses this lock so two graph runs never overlap
        self.run_lock = threading.RLock()
        # group commit of intake (see _intake_loop)
        self._intake_cond = threading.Condition()
        self._intake_queue: list[_Intake] = []
        self._intake_thread: threading.Thread | None = None
        self._intake_stop = False

    # ---- intake ---------------------------------------------------------------------------

    def submit(self, events: Sequence[ExceptionEvent], timeout_s: float | None = None) -> list[Any]:
        """Store the events (idempotent by id) and schedule a run for each incident that got a new
        event; returns each event's IngestResult. Blocks until the events are committed, or raises
        IntakeTimeout after ``timeout_s`` (the events may still be stored: posting them again is safe,
        as every event id has one effect)."""
        item = self._enqueue(list(events), None)
        if not item.ready.wait(timeout_s):
            raise IntakeTimeout(f"events not committed within {timeout_s} s")
        if item.error is not None:
            raise item.error
        return item.results

    async def submit_async(self, events: Sequence[ExceptionEvent], timeout_s: float | None = None) -> list[Any]:
        """``submit`` for the event loop: the request waits without holding a worker thread."""
        loop = asyncio.get_running_loop()
        item = self._enqueue(list(events), (loop, loop.create_future()))
        assert item.waiter is not None
        try:
            return await asyncio.wait_for(asyncio.shield(item.waiter[1]), timeout_s)  # type: ignore[no-any-return]
        except TimeoutError as exc:
            raise IntakeTimeout(f"events not committed within {timeout_s} s") from exc

    def _enqueue(self, events: list[ExceptionEvent], waiter: Any) -> _Intake:
        if self.runtime is None:
            raise RuntimeError("the agent runtime is not available")
        item = _Intake(events, waiter)
        with self._intake_cond:
            if self._intake_stop:
                raise RuntimeError("the incident worker has stopped")
            self._intake_queue.append(item)
            if self._intake_thread is None or not self._intake_thread.is_alive():
                self._intake_thread = threading.Thread(target=self._intake_loop, name="intake", daemon=True)
                self._intake_thread.start()
            self._intake_cond.notify()
        return item

    def _intake_loop(self) -> None:
        """Group commit: every request queued while the previous group was being written is ingested
        in one transaction, and each gets its own events' results back. Requests then never wait on
        SQLite's busy timeout for each other (it polls with growing sleeps), the database sees one
        write per group, and no request holds a thread while it waits. Not under run_lock: intake
        never waits for incident runs."""
        while True:
            with self._intake_cond:
                while not self._intake_queue and not self._intake_stop:
                    self._intake_cond.wait()
                if not self._intake_queue:
                    return
                group = self._take_group()
            try:
                self._commit_group(group)
            except Exception as exc:  # never leave a request without an answer, nor the thread dead
                log.exception("intake group failed")
                for item in group:
                    if item.error is None and not item.results:
                        item.error = exc
                    item.finish()

    def _take_group(self) -> list[_Intake]:
        """The queued requests, up to MAX_GROUP_EVENTS events (at least one request): one transaction
        and one IN (...) list stay bounded however many requests pile up."""
        group: list[_Intake] = []
        size = 0
        while self._intake_queue and (not group or size + len(self._intake_queue[0].events) <= MAX_GROUP_EVENTS):
            item = self._intake_queue.pop(0)
            group.append(item)
            size += len(item.events)
        return group

    def _commit_group(self, group: list[_Intake]) -> None:
        self._ingest_group(group)
        accepted = duplicates = 0
        incidents: dict[str, None] = {}
        for item in group:
            for r in item.results:
                if r.duplicate:
                    duplicates += 1
                else:
                    accepted += 1
                    incidents[r.incident_id] = None
        if duplicates:
            self.metrics.inc("orderagent_events_duplicate_total", duplicates)
        if accepted:
            self.metrics.inc("orderagent_events_accepted_total", accepted)
        for incident_id in incidents:
            self.schedule(incident_id)
        for item in group:
            item.finish()

    def _ingest_group(self, group: list[_Intake]) -> None:
        runtime = self.runtime
        assert runtime is not None
        try:
            results = list(runtime.ingest([e for item in group for e in item.events]))
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            # one request's events broke the group's transaction: each request on its own, so only
            # that one fails
            for item in group:
                try:
                    item.results = list(runtime.ingest(item.events))
                except Exception as one:  # handed to the request that sent these events
                    item.error = one
            return
        at = 0
        for item in group:
            item.results, at = results[at : at + len(item.events)], at + len(item.events)

    def schedule(self, incident_id: str) -> None:
        """Queue a run of the incident, due once its events pause (see the module docstring)."""
        now = time.monotonic()
        with self._cond:
            _, latest, _ = self._due.get(incident_id, (0.0, now + self.max_wait_s, False))
            self._due[incident_id] = (min(now + self.debounce_s, latest), latest, False)
            self._ensure_runner()
            self._cond.notify_all()

    def retry_later(self, incident_id: str, delay_s: float = LEASE_RETRY_S) -> None:
        """Queue the incident again in ``delay_s`` (another process holds its run lease now)."""
        with self._cond:
            if incident_id in self._due:  # already queued (an event came meanwhile): that run will do
                return
            due = time.monotonic() + delay_s
            self._due[incident_id] = (due, due, True)
            self._ensure_runner()
            self._cond.notify_all()

    def _ensure_runner(self) -> None:
        if self._runner is None or not self._runner.is_alive():
            self._runner = threading.Thread(target=self._loop, name="incident-run", daemon=True)
            self._runner.start()

    def _next_due(self) -> str | None:
        """The incident to run now, or None; waits on the condition (held) until one is due."""
        while not self._stop.is_set() or (self._flush and self._due):
            if self._stop.is_set():  # a lease held elsewhere is the holder's (or the next start's) to run
                for incident_id in [k for k, v in self._due.items() if v[2]]:
                    del self._due[incident_id]
                if not self._due:
                    break
            if not self._due:
                self._cond.wait(1.0)
                continue
            incident_id, (due, _, retry) = min(self._due.items(), key=lambda kv: kv[1][0])
            wait = due - time.monotonic()
            if wait <= 0 or (self._flush and not retry):
                del self._due[incident_id]
                self._running = incident_id
                return incident_id
            self._cond.wait(wait)
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                incident_id = self._next_due()
                if incident_id is None:
                    return
            try:
                self._run(incident_id)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _run(self, incident_id: str) -> None:
        started = time.perf_counter()
        try:
            runtime = self.runtime
            assert runtime is not None  # only scheduled by intake and recover(), which require it
            with self.run_lock:
                outcome = runtime.run_incident(incident_id)
        except Exception:
            log.exception("incident run failed", incident_id=incident_id)
            self.metrics.inc("orderagent_incident_runs_total", outcome="error")
            return
        if getattr(outcome, "held_elsewhere", False):
            self.metrics.inc("orderagent_incident_runs_total", outcome="held_elsewhere")
            self.retry_later(incident_id)
            return
        self.metrics.observe("orderagent_decision_latency_seconds", time.perf_counter() - started)
        status = getattr(outcome, "status", None) or "done"
        self.metrics.inc("orderagent_incident_runs_total", outcome=str(status))

    def pending(self) -> int:
        """Runs queued or running (the /metrics gauge, and drain)."""
        with self._cond:
            return len(self._due) + (self._running is not None)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Run every queued incident now (no debounce) and wait until none is queued or running
        (tests and the demo use this)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._flush += 1
            try:
                self._cond.notify_all()
                while self._due or self._running is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("incident runs still pending")
                    if self._due:
                        self._ensure_runner()
                    self._cond.wait(min(remaining, 0.5))
            finally:
                self._flush -= 1

    # ---- decisions ------------------------------------------------------------------------

    def decide(self, **kwargs: Any) -> Any:
        if self.runtime is None:
            raise RuntimeError("the agent runtime is not available")
        with self.run_lock:
            out = self.runtime.decide(**kwargs)
        if out.incident is not None and not out.resumed:
            # settled, but the thread did not resume here (its lease is held elsewhere, or another
            # decision resumed it already): a run resumes it if it still waits
            self.schedule(out.incident.incident_id)
        return out

    # ---- lifecycle ------------------------------------------------------------------------

    def recover(self, older_than_s: float = 0.0) -> list[str]:
        """Queue the incidents that were accepted but whose run never finished (the process stopped
        between intake and the end of the run), unchanged for ``older_than_s`` seconds and not queued
        or running here; an incident waiting for approval stays waiting, unless its request no longer
        waits (decided or expired, but the thread never resumed); an incident that ended (resolved or
        escalated) is queued when an event joined it after its last follow-up check. At start every one of them
        (nothing runs here yet); then every few seconds with ``recover_after_s``, for what another
        process left behind."""
        from datetime import timedelta

        from sqlmodel import Session, col, select

        from agent.models import UNFINISHED_STATUSES, Incident, IncidentStatus
        from guardrails.models import ApprovalRequest, RequestStatus

        stmt = select(Incident.id).where(col(Incident.status).in_([x.value for x in UNFINISHED_STATUSES]))
        # waiting for a request that no longer waits: decided or expired, never resumed
        settled = (
            select(Incident.id)
            .join(ApprovalRequest, col(ApprovalRequest.id) == col(Incident.request_id))
            .where(Incident.status == IncidentStatus.awaiting_approval)
            .where(col(ApprovalRequest.status) != RequestStatus.pending)
        )
        # ended, but an event joined after its last follow-up check (it was ingested elsewhere, or
        # here by a process that stopped before the run it queued): that run's check happens now.
        # A failed incident is left out on purpose: its run would retry the node that failed, and a
        # failure is a person's to look at (its error record says why)
        unchecked = (
            select(Incident.id)
            .where(col(Incident.status).in_([IncidentStatus.resolved.value, IncidentStatus.escalated.value]))
            .where(col(Incident.event_count) > col(Incident.checked_events))
        )
        if older_than_s > 0:
            since = self.clock.now() - timedelta(seconds=older_than_s)
            stmt = stmt.where(col(Incident.updated_at) <= since)
            settled = settled.where(col(Incident.updated_at) <= since)
            unchecked = unchecked.where(col(Incident.updated_at) <= since)
        with Session(self.engine) as s:
            found = list(dict.fromkeys([*s.exec(stmt), *s.exec(settled), *s.exec(unchecked)]))
        with self._cond:
            ids = [i for i in found if i not in self._due and i != self._running]
        for incident_id in ids:
            self.schedule(incident_id)
        if ids:
            log.info("incidents_recovered", count=len(ids))
        return ids

    def start(self) -> None:
        if self.runtime is None or self._ticker is not None:
            return
        self.recover()
        self._ticker = threading.Thread(target=self._tick, name="approval-expiry", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        runtime = self.runtime
        assert runtime is not None  # start() does not start the ticker without a runtime
        while not self._stop.wait(self._expire_every_s):
            try:
                with self.run_lock:
                    runtime.expire_due()
            except Exception:
                log.exception("expiring approvals failed")
            try:
                self.recover(older_than_s=self.settings.recover_after_s)
            except Exception:
                log.exception("recovering unfinished incidents failed")

    def stop(self) -> None:
        """Ingest and run what is queued (a graceful stop leaves nothing for recovery), then stop."""
        with self._intake_cond:
            self._intake_stop = True
            self._intake_cond.notify_all()
        if self._intake_thread is not None:
            self._intake_thread.join()
        with self._cond:
            self._flush += 1
            self._stop.set()
            self._cond.notify_all()
        runner = self._runner
        if runner is not None:
            runner.join()
        if self._ticker is not None:  # an expiry pass under way ends before the runtime closes
            self._ticker.join(timeout=30)
        close = getattr(self.runtime, "close", None)
        if close is not None:
            with self.run_lock:  # a decision resuming a thread (a request's thread) finishes first
                close()

"""Background incident runs: intake answers at once, the agent works on one worker thread.

One thread, because incident runs write to the world and SQLite has a single writer; runs queue up
behind each other instead of fighting over the lock. A ticker expires overdue approvals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog
from sqlalchemy.engine import Engine

from agent.api.metrics import Metrics
from agent.settings import Settings
from tools.clock import Clock, SystemClock
from tools.events import ExceptionEvent

log = structlog.get_logger(__name__)


def build_runtime(*, engine: Engine, settings: Settings, clock: Clock) -> Any | None:
    """The AgentRuntime, or None when the agent package is missing from this build."""
    try:
        from agent.runtime import AgentRuntime

        return AgentRuntime(engine=engine, settings=settings, clock=clock)
    except ModuleNotFoundError as exc:
        # a partial build still serves reads; /readyz reports the runtime as unavailable
        log.error("agent runtime unavailable: intake and approvals are disabled", missing=exc.name)
        return None


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
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="incident-run")
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._stop = threading.Event()
        self._expire_every_s = expire_every_s
        self._ticker: threading.Thread | None = None
        # a run resumed by a decision also uses this lock so two graph runs never overlap
        self.run_lock = threading.RLock()

    # ---- intake ---------------------------------------------------------------------------

    def submit(self, events: Sequence[ExceptionEvent]) -> list[Any]:
        """Store the events (idempotent by id) and schedule a run for each incident that got a new event."""
        if self.runtime is None:
            raise RuntimeError("the agent runtime is not available")
        # not under run_lock: intake must not wait for incident runs (SQLite writers queue on its
        # busy timeout; see tools/db.py for why savepoints take the write lock first)
        results = list(self.runtime.ingest(list(events)))
        for res in results:
            if res.duplicate:
                self.metrics.inc("orderagent_events_duplicate_total")
            else:
                self.metrics.inc("orderagent_events_accepted_total")
        for incident_id in dict.fromkeys(r.incident_id for r in results if not r.duplicate):
            self.schedule(incident_id)
        return results

    def schedule(self, incident_id: str) -> None:
        with self._lock:
            if incident_id in self._queued:
                return  # the queued run will see the new event too
            self._queued.add(incident_id)
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(self._pool.submit(self._run, incident_id))

    def _run(self, incident_id: str) -> None:
        with self._lock:
            self._queued.discard(incident_id)
        started = time.perf_counter()
        try:
            runtime = self.runtime
            assert runtime is not None  # only scheduled by submit(), which requires it
            with self.run_lock:
                outcome = runtime.run_incident(incident_id)
        except Exception:
            log.exception("incident run failed", incident_id=incident_id)
            self.metrics.inc("orderagent_incident_runs_total", outcome="error")
            return
        self.metrics.observe("orderagent_decision_latency_seconds", time.perf_counter() - started)
        status = getattr(outcome, "status", None) or "done"
        self.metrics.inc("orderagent_incident_runs_total", outcome=str(status))

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for the queued runs (tests and the demo use this)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("incident runs still pending")
            pending[0].result(timeout=remaining)

    # ---- decisions ------------------------------------------------------------------------

    def decide(self, **kwargs: Any) -> Any:
        if self.runtime is None:
            raise RuntimeError("the agent runtime is not available")
        with self.run_lock:
            return self.runtime.decide(**kwargs)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.runtime is None or self._ticker is not None:
            return
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

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=False)
        close = getattr(self.runtime, "close", None)
        if close is not None:
            close()

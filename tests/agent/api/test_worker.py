"""IncidentWorker: runs coalesced per incident (debounce, max wait), recovery of unfinished incidents,
group-committed intake (each request gets its own results, a bad request fails alone), graceful stop.

Timing tests use generous bounds: the property under test is the order of events (one run after the
storm, a run before the stream stops), not the exact latency. Where a test needs requests to meet in
one intake group, it holds the intake thread inside ``runtime.ingest`` until they are all queued.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from agent.api.metrics import Metrics
from agent.api.worker import IncidentWorker, _Intake
from agent.models import Incident, IncidentEvent, IncidentStatus
from tests.agent.api.conftest import event_body, make_pending_request, settings_for
from tests.tools.factories import NOW, build_small_world
from tools.clock import FakeClock
from tools.events import ExceptionEvent

WAIT_S = 15.0  # the longest any wait for a thread may take before the test fails (a loaded machine)
QUIET = 10_000  # a debounce (ms) long enough that nothing runs by itself during a test


# ---- factories and stand-ins ------------------------------------------------------------------


def stalled(event_id: str, *, order: str = "O3", zone: str = "north") -> ExceptionEvent:
    """A stalled-in-transit event; events naming the same order join the same incident."""
    return ExceptionEvent.model_validate(event_body(event_id, order_ids=[order], zone=zone))


class RunRecorder:
    """Stands in for ``runtime.run_incident`` (or wraps the real one): which incident ran, when it
    started (monotonic), and optionally holds each run until ``release`` is set."""

    def __init__(self, real: Callable[[str], Any] | None = None, *, hold: bool = False) -> None:
        self.real = real
        self.runs: list[tuple[str, float]] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._cond = threading.Condition()

    def __call__(self, incident_id: str) -> Any:
        with self._cond:
            self.runs.append((incident_id, time.monotonic()))
            self._cond.notify_all()
        assert self.release.wait(WAIT_S), "a held run was never released"
        if self.real is not None:
            return self.real(incident_id)
        return SimpleNamespace(status="resolved")

    def wait_for(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.runs) >= n, WAIT_S), f"{len(self.runs)} runs, wanted {n}"

    @property
    def incident_ids(self) -> list[str]:
        return [incident_id for incident_id, _ in self.runs]


class IngestSpy:
    """Wraps ``runtime.ingest``: records each call's event ids, can hold the first call (so requests
    queue up behind it and form one group) and raises on a poison event id, as a broken batch would."""

    def __init__(self, real: Callable[[Sequence[ExceptionEvent]], Any], *, hold_first: bool = False) -> None:
        self.real = real
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.poison: str | None = None

    def __call__(self, events: Sequence[ExceptionEvent]) -> Any:
        events = list(events)
        ids = [e.id for e in events]
        self.calls.append(ids)
        self.entered.set()
        assert self.release.wait(WAIT_S), "held intake was never released"
        if self.poison is not None and self.poison in ids:
            raise ValueError(f"poison event {self.poison}")
        return self.real(events)


def runtime_of(worker: IncidentWorker) -> Any:
    runtime = worker.runtime
    assert runtime is not None, "the agent runtime is part of this build"
    return runtime


def record_runs(worker: IncidentWorker, *, real: bool = False, hold: bool = False) -> RunRecorder:
    """Put a RunRecorder in place of the worker's runtime.run_incident (wrapping it when ``real``)."""
    runtime = runtime_of(worker)
    runs = RunRecorder(runtime.run_incident if real else None, hold=hold)
    runtime.run_incident = runs
    return runs


def spy_ingest(worker: IncidentWorker, *, hold_first: bool = False, poison: str | None = None) -> IngestSpy:
    """Put an IngestSpy around the worker's runtime.ingest."""
    runtime = runtime_of(worker)
    spy = IngestSpy(runtime.ingest, hold_first=hold_first)
    spy.poison = poison
    runtime.ingest = spy
    return spy


def wait_queued(worker: IncidentWorker, n: int) -> None:
    """Wait until n requests wait in the intake queue (behind a held group)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        with worker._intake_cond:
            if len(worker._intake_queue) >= n:
                return
        assert time.monotonic() < deadline, f"fewer than {n} requests ever queued"
        time.sleep(0.002)


def meet_in_one_group(
    worker: IncidentWorker, spy: IngestSpy, first: threading.Thread, others: list[threading.Thread]
) -> None:
    """Start ``first`` and hold its ingest; queue ``others`` behind it (they form the next group),
    release, and wait for every thread."""
    first.start()
    assert spy.entered.wait(WAIT_S)  # the intake thread now holds the first group
    for t in others:
        t.start()
    wait_queued(worker, len(others))
    spy.release.set()
    for t in [first, *others]:
        t.join(WAIT_S)


def run_threads(targets: Sequence[Callable[[], None]]) -> None:
    """Run each target on its own thread, started together; re-raise the first failure."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait(WAIT_S)
                target()
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive(), "a submitting thread hung"
    if errors:
        raise errors[0]


def stored_event_ids(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return list(s.exec(select(IncidentEvent.event_id)))


def incident(engine: Engine, incident_id: str) -> Incident:
    with Session(engine) as s:
        found = s.get(Incident, incident_id)
        assert found is not None
        return found


MakeWorker = Callable[..., IncidentWorker]


@pytest.fixture
def make_worker() -> Iterator[MakeWorker]:
    """Build an IncidentWorker over an engine with the given settings overrides (FakeClock at NOW).
    Every worker built is stopped at the end."""
    workers: list[IncidentWorker] = []

    def make(engine: Engine, **overrides: Any) -> IncidentWorker:
        worker = IncidentWorker(
            engine=engine, settings=settings_for(engine, **overrides), metrics=Metrics(), clock=FakeClock(NOW)
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


@pytest.fixture
def world(sqlite_only_engine: Engine) -> Engine:
    """A fresh SQLite database with the small test world: real incident runs need its orders."""
    with Session(sqlite_only_engine, expire_on_commit=False) as s:
        build_small_world(s)
    return sqlite_only_engine


# ---- coalescing -------------------------------------------------------------------------------


def test_a_burst_of_events_for_one_incident_starts_one_run_after_the_debounce(
    world: Engine, make_worker: MakeWorker
) -> None:
    worker = make_worker(world, intake_debounce_ms=300, intake_max_wait_ms=QUIET)
    runs = record_runs(worker, real=True)
    returned: list[float] = []
    results: list[Any] = []

    def post(thread: int) -> Callable[[], None]:
        def go() -> None:
            for i in range(5):
                results.extend(worker.submit([stalled(f"ev-{thread}-{i}")]))
                returned.append(time.monotonic())

        return go

    run_threads([post(t) for t in range(4)])
    assert len(results) == 20 and not any(r.duplicate for r in results)
    (incident_id,) = {r.incident_id for r in results}

    runs.wait_for(1)
    worker.drain(timeout_s=WAIT_S)  # let the run finish; nothing else may be queued by now
    assert runs.incident_ids == [incident_id]
    # the run waited for the burst to end: it started after the last event was accepted
    assert runs.runs[0][1] > max(returned)
    done = incident(world, incident_id)
    assert done.event_count == 20
    assert done.status != IncidentStatus.open
    assert worker.metrics.counter_value("orderagent_incident_runs_total", outcome=str(done.status)) == 1
    assert worker.metrics.counter_value("orderagent_events_accepted_total") == 20


def test_max_wait_runs_the_incident_while_events_keep_arriving(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=100, intake_max_wait_ms=300)
    runs = record_runs(worker)
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 1.5:  # a steady stream, gaps far below the debounce
        worker.submit([stalled(f"ev-{i}")])
        i += 1
        time.sleep(0.01)
    stream_ended = time.monotonic()

    assert runs.runs, "no run while events kept arriving past max wait"
    first_run = runs.runs[0][1]
    assert first_run < stream_ended
    # never before the debounce; about max wait (0.3 s) after the first event, with room for a busy box
    assert 0.1 <= first_run - started < 1.2


def test_an_event_for_a_running_incident_queues_exactly_one_more_run(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=20, intake_max_wait_ms=100)
    runs = record_runs(worker, hold=True)
    try:
        (first,) = worker.submit([stalled("ev-1")])
        runs.wait_for(1)  # the first run is in progress, held
        for i in range(2, 5):
            (late,) = worker.submit([stalled(f"ev-{i}")])
            assert late.incident_id == first.incident_id
        assert worker.pending() == 2  # the running one, and one follow-up however many events came
    finally:
        runs.release.set()
    worker.drain(timeout_s=WAIT_S)
    assert runs.incident_ids == [first.incident_id, first.incident_id]
    assert worker.pending() == 0


def test_drain_runs_queued_incidents_without_waiting_for_the_debounce(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker)
    results = worker.submit([stalled("ev-a", order="O1", zone="a"), stalled("ev-b", order="O2", zone="b")])
    assert worker.pending() == 2 and runs.runs == []
    started = time.monotonic()
    worker.drain(timeout_s=WAIT_S)
    assert time.monotonic() - started < 5.0
    assert sorted(runs.incident_ids) == sorted(r.incident_id for r in results)
    assert worker.pending() == 0


# ---- recovery ---------------------------------------------------------------------------------


def test_recover_queues_accepted_but_unfinished_incidents_only(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker)
    statuses = list(IncidentStatus)
    # one incident per status, ingested without scheduling (as if the process died right after intake)
    events = [stalled(f"ev-{s.value}", order=f"O-{s.value}", zone=s.value) for s in statuses]
    results = runtime_of(worker).ingest(events)
    by_status = dict(zip(statuses, (r.incident_id for r in results), strict=True))
    assert len(set(by_status.values())) == len(statuses)
    with Session(engine) as s:
        for status, incident_id in by_status.items():
            # an incident that got to a status after the run has had its events checked by that run
            s.execute(
                update(Incident)
                .where(col(Incident.id) == incident_id)
                .values(status=status.value, checked_events=Incident.event_count)
            )
        s.commit()
    unfinished = {by_status[s] for s in (IncidentStatus.open, IncidentStatus.investigating, IncidentStatus.executing)}

    assert worker.pending() == 0
    assert set(worker.recover()) == unfinished
    assert worker.pending() == len(unfinished)
    worker.drain(timeout_s=WAIT_S)
    assert sorted(runs.incident_ids) == sorted(unfinished)


def test_start_runs_an_incident_left_open_and_leaves_one_awaiting_approval(
    world: Engine, make_worker: MakeWorker
) -> None:
    worker = make_worker(world, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker, real=True)
    (left_open,) = runtime_of(worker).ingest([stalled("ev-open")])  # accepted, never scheduled
    make_pending_request(world, incident_id="inc-waiting", order_id="O1")
    assert incident(world, left_open.incident_id).status == IncidentStatus.open

    worker.start()
    worker.drain(timeout_s=WAIT_S)

    assert runs.incident_ids == [left_open.incident_id]
    ran = incident(world, left_open.incident_id)
    assert ran.status != IncidentStatus.open and ran.plan is not None
    assert incident(world, "inc-waiting").status == IncidentStatus.awaiting_approval


# ---- group commit -----------------------------------------------------------------------------


def test_concurrent_submits_each_get_their_own_results(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    sent: dict[int, list[str]] = {}
    got: dict[int, list[Any]] = {}

    def post(thread: int) -> Callable[[], None]:
        def go() -> None:
            for batch in range(4):
                ids = [f"ev-{thread}-{batch}-{k}" for k in range(thread % 3 + 1)]
                sent.setdefault(thread, []).extend(ids)
                got.setdefault(thread, []).extend(worker.submit([stalled(e, order=f"O-{thread}") for e in ids]))

        return go

    run_threads([post(t) for t in range(8)])
    for thread, ids in sent.items():
        assert [r.event_id for r in got[thread]] == ids
        assert not any(r.duplicate for r in got[thread])
    every = [e for ids in sent.values() for e in ids]
    assert sorted(stored_event_ids(engine)) == sorted(every)


def test_requests_queued_behind_a_write_are_ingested_in_one_call(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    spy = spy_ingest(worker, hold_first=True)
    got: dict[int, list[Any]] = {}

    def post(n: int, ids: list[str]) -> Callable[[], None]:
        def go() -> None:
            got[n] = worker.submit([stalled(e, order=f"O{n}") for e in ids])

        return go

    requests = {n: [f"ev-{n}-a", f"ev-{n}-b"] for n in range(1, 6)}
    requests[6] = ["ev-0", "ev-6"]  # a repeat of an id committed by the first group
    meet_in_one_group(
        worker,
        spy,
        threading.Thread(target=post(0, ["ev-0"])),
        [threading.Thread(target=post(n, ids)) for n, ids in requests.items()],
    )

    assert len(spy.calls) == 2  # ev-0, then every queued request together
    assert sorted(spy.calls[1]) == sorted(e for ids in requests.values() for e in ids)
    for n, ids in requests.items():
        assert [r.event_id for r in got[n]] == ids
    assert got[6][0].duplicate and got[6][0].incident_id == got[0][0].incident_id
    assert not got[6][1].duplicate
    assert sorted(stored_event_ids(engine)) == sorted({"ev-0", *(e for ids in requests.values() for e in ids)})
    assert worker.metrics.counter_value("orderagent_events_duplicate_total") == 1


def test_a_bad_request_in_a_group_fails_alone(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    spy = spy_ingest(worker, hold_first=True, poison="ev-poison")
    outcome: dict[str, Any] = {}

    def post(name: str, events: list[ExceptionEvent]) -> Callable[[], None]:
        def go() -> None:
            try:
                outcome[name] = worker.submit(events)
            except ValueError as exc:
                outcome[name] = exc

        return go

    group = {
        "good-1": [stalled("ev-good-1", order="O2")],
        "bad": [stalled("ev-fine-but-with-poison", order="O5"), stalled("ev-poison", order="O5")],
        "good-2": [stalled("ev-good-2a", order="O6"), stalled("ev-good-2b", order="O6")],
    }
    meet_in_one_group(
        worker,
        spy,
        threading.Thread(target=post("held", [stalled("ev-held", order="O1")])),
        [threading.Thread(target=post(name, events)) for name, events in group.items()],
    )

    assert isinstance(outcome["bad"], ValueError) and "ev-poison" in str(outcome["bad"])
    assert [r.event_id for r in outcome["held"]] == ["ev-held"]
    assert [r.event_id for r in outcome["good-1"]] == ["ev-good-1"]
    assert [r.event_id for r in outcome["good-2"]] == ["ev-good-2a", "ev-good-2b"]
    # the group was tried once as a whole, then each request on its own
    assert len(spy.calls) == 2 + len(group)
    stored = set(stored_event_ids(engine))
    assert stored == {"ev-held", "ev-good-1", "ev-good-2a", "ev-good-2b"}  # nothing of the bad request


def test_ingest_group_hands_the_error_to_the_bad_request_only(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    spy_ingest(worker, poison="ev-poison")
    good = _Intake([stalled("ev-1", order="O1"), stalled("ev-2", order="O1")], None)
    bad = _Intake([stalled("ev-poison", order="O2")], None)
    last = _Intake([stalled("ev-3", order="O3")], None)

    worker._ingest_group([good, bad, last])

    assert good.error is None and [r.event_id for r in good.results] == ["ev-1", "ev-2"]
    assert isinstance(bad.error, ValueError) and bad.results == []
    assert last.error is None and [r.event_id for r in last.results] == ["ev-3"]
    alone = _Intake([stalled("ev-poison", order="O2")], None)
    worker._ingest_group([alone])
    assert isinstance(alone.error, ValueError)


def test_a_request_alone_that_fails_raises_to_its_caller(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    spy_ingest(worker, poison="ev-poison")
    with pytest.raises(ValueError, match="ev-poison"):
        worker.submit([stalled("ev-poison")])
    # the intake thread survived: the next request is served
    assert [r.event_id for r in worker.submit([stalled("ev-next")])] == ["ev-next"]
    assert worker.pending() == 1


def test_submit_async_returns_each_coroutines_results(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    spy_ingest(worker, poison="ev-poison")

    async def main() -> tuple[list[list[Any]], BaseException | None]:
        batches = [[stalled(f"ev-{n}-{k}", order=f"O{n}") for k in range(n + 1)] for n in range(5)]
        results = await asyncio.gather(*(worker.submit_async(b) for b in batches))
        try:
            await worker.submit_async([stalled("ev-poison")])
        except ValueError as exc:
            return list(results), exc
        return list(results), None

    results, error = asyncio.run(main())
    assert [[r.event_id for r in rs] for rs in results] == [[f"ev-{n}-{k}" for k in range(n + 1)] for n in range(5)]
    assert isinstance(error, ValueError)
    assert len(stored_event_ids(engine)) == sum(range(1, 6))


def test_a_coroutine_that_went_away_does_not_break_intake(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    spy = spy_ingest(worker, hold_first=True)

    async def main() -> list[Any]:
        gone = asyncio.ensure_future(worker.submit_async([stalled("ev-gone")]))
        await asyncio.to_thread(spy.entered.wait, WAIT_S)
        gone.cancel()  # the client disconnected while its events were being written
        spy.release.set()
        return await worker.submit_async([stalled("ev-after")])

    after = asyncio.run(main())
    assert [r.event_id for r in after] == ["ev-after"]
    # accepted before the client went away: stored all the same
    assert sorted(stored_event_ids(engine)) == ["ev-after", "ev-gone"]


def test_a_caller_whose_event_loop_closed_does_not_strand_the_requests_behind_it(
    engine: Engine, make_worker: MakeWorker
) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    record_runs(worker)
    spy = spy_ingest(worker, hold_first=True)

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.submit_async([stalled("ev-gone")]), 0.1)

    asyncio.run(give_up())  # the loop is closed while ev-gone is still being written
    assert spy.entered.wait(WAIT_S)
    got: list[Any] = []
    behind = threading.Thread(target=lambda: got.extend(worker.submit([stalled("ev-behind")])), daemon=True)
    behind.start()
    wait_queued(worker, 1)
    spy.release.set()
    behind.join(WAIT_S)

    assert not behind.is_alive(), "the request queued behind the closed loop's was never answered"
    assert [r.event_id for r in got] == ["ev-behind"]
    assert sorted(stored_event_ids(engine)) == ["ev-behind", "ev-gone"]


# ---- stop -------------------------------------------------------------------------------------


def test_stop_ingests_and_runs_everything_queued(world: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(world, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker, real=True)
    spy = spy_ingest(worker, hold_first=True)
    got: dict[str, list[Any]] = {}

    def post(event_id: str) -> Callable[[], None]:
        def go() -> None:
            got[event_id] = worker.submit([stalled(event_id)])

        return go

    first = threading.Thread(target=post("ev-1"))
    first.start()
    assert spy.entered.wait(WAIT_S)
    second = threading.Thread(target=post("ev-2"))
    second.start()
    wait_queued(worker, 1)  # ev-2 has not been written yet when stop is called

    stop_called = time.monotonic()
    spy.release.set()
    worker.stop()
    for t in (first, second):
        t.join(WAIT_S)

    assert [r.event_id for r in got["ev-1"]] == ["ev-1"] and [r.event_id for r in got["ev-2"]] == ["ev-2"]
    (incident_id,) = {got["ev-1"][0].incident_id, got["ev-2"][0].incident_id}
    assert sorted(stored_event_ids(world)) == ["ev-1", "ev-2"]
    assert worker.pending() == 0
    # the debounce (10 s) did not hold the run back: stop ran it
    assert runs.incident_ids == [incident_id] and runs.runs[0][1] >= stop_called
    done = incident(world, incident_id)
    assert done.event_count == 2 and done.status != IncidentStatus.open


# ---- recovery with a grace period, bounded groups, timeouts -----------------------------------


def test_periodic_recovery_leaves_recent_queued_and_running_incidents_alone(
    engine: Engine, make_worker: MakeWorker
) -> None:
    from datetime import timedelta

    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker)
    stale, fresh, queued = (
        r.incident_id
        for r in runtime_of(worker).ingest([stalled(f"ev-{z}", order=f"O-{z}", zone=z) for z in ("a", "b", "c")])
    )
    with Session(engine) as s:  # only "stale" has not changed for a minute
        s.execute(update(Incident).where(col(Incident.id) == stale).values(updated_at=NOW - timedelta(seconds=61)))
        s.execute(update(Incident).where(col(Incident.id) == queued).values(updated_at=NOW - timedelta(seconds=61)))
        s.commit()
    worker.schedule(queued)  # already waiting to run here: not queued twice
    assert worker.recover(older_than_s=60) == [stale]
    assert worker.pending() == 2
    worker.drain(timeout_s=WAIT_S)
    assert sorted(runs.incident_ids) == sorted([stale, queued])
    assert fresh not in runs.incident_ids


def test_an_intake_group_is_bounded_and_never_splits_a_request(engine: Engine, make_worker: MakeWorker) -> None:
    import agent.api.worker as worker_module

    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    items = [_Intake([stalled(f"g{i}-{k}", order=f"O{i}") for k in range(n)], None) for i, n in enumerate((3, 3, 5, 1))]
    with worker._intake_cond:
        worker._intake_queue.extend(items)
        original = worker_module.MAX_GROUP_EVENTS
        worker_module.MAX_GROUP_EVENTS = 6
        try:
            first = worker._take_group()
            second = worker._take_group()
            third = worker._take_group()
        finally:
            worker_module.MAX_GROUP_EVENTS = original
    assert [len(i.events) for i in first] == [3, 3]
    assert [len(i.events) for i in second] == [5, 1]
    assert third == [] and worker._intake_queue == []
    big = _Intake([stalled(f"big-{k}") for k in range(9)], None)  # larger than the bound: a group alone
    with worker._intake_cond:
        worker._intake_queue.append(big)
        worker_module.MAX_GROUP_EVENTS = 6
        try:
            assert worker._take_group() == [big]
        finally:
            worker_module.MAX_GROUP_EVENTS = original


def test_a_request_not_committed_in_time_gets_a_timeout_and_its_events_still_land(
    engine: Engine, make_worker: MakeWorker
) -> None:
    from agent.api.worker import IntakeTimeout

    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    spy = spy_ingest(worker, hold_first=True)
    with pytest.raises(IntakeTimeout):
        worker.submit([stalled("slow-1")], timeout_s=0.2)

    async def late() -> None:
        with pytest.raises(IntakeTimeout):
            await worker.submit_async([stalled("slow-2")], timeout_s=0.2)

    asyncio.run(late())
    spy.release.set()  # the database answers at last: both requests' events are stored
    assert worker.submit([stalled("after")], timeout_s=WAIT_S)[0].event_id == "after"
    assert {"slow-1", "slow-2", "after"} <= set(stored_event_ids(engine))


def test_a_failure_outside_the_ingest_still_answers_every_request_of_the_group(
    engine: Engine, make_worker: MakeWorker
) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)

    def broken_schedule(incident_id: str) -> None:
        raise RuntimeError("scheduler broke")

    worker.schedule = broken_schedule  # type: ignore[method-assign]
    # the events were committed before scheduling broke: the request is answered with them (202)...
    (accepted,) = worker.submit([stalled("ev-x")], timeout_s=WAIT_S)
    assert accepted.event_id == "ev-x" and "ev-x" in stored_event_ids(engine)
    del worker.schedule  # ...the intake thread survived and serves the next request...
    assert worker.submit([stalled("ev-y", order="O9", zone="south")], timeout_s=WAIT_S)[0].event_id == "ev-y"
    # ...and the incident that was never scheduled is found by recovery, not lost
    assert accepted.incident_id in worker.recover()


# ---- other processes: run leases, settled requests ----------------------------------------------


@pytest.fixture
def leased_elsewhere(world: Engine, make_worker: MakeWorker) -> Iterator[tuple[IncidentWorker, RunRecorder, Any, Any]]:
    """A worker with one incident queued whose run lease another process holds: (worker, its runs,
    the ingest result, the other process's LeaseKeeper)."""
    from agent.lease import LeaseKeeper

    worker = make_worker(world, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker, real=True)
    (res,) = runtime_of(worker).ingest([stalled("ev-1")])
    other = LeaseKeeper(world, holder="another-process")
    assert other.try_acquire(res.incident_id)
    worker.schedule(res.incident_id)
    yield worker, runs, res, other
    other.close()


def test_a_run_leased_by_another_process_is_retried_until_the_lease_is_free(
    world: Engine, leased_elsewhere: tuple[IncidentWorker, RunRecorder, Any, Any]
) -> None:
    worker, runs, res, other = leased_elsewhere
    with pytest.raises(TimeoutError):  # the run is not given up while it waits for the lease
        worker.drain(timeout_s=2.5)
    runs.wait_for(2)  # tried, and tried again a second later
    assert incident(world, res.incident_id).status == IncidentStatus.open
    assert worker.pending() >= 1  # queued again (and maybe trying right now)
    other.release(res.incident_id)
    worker.drain(timeout_s=WAIT_S)
    ran = incident(world, res.incident_id)
    assert ran.status != IncidentStatus.open and ran.plan is not None
    assert worker.pending() == 0


def test_stop_leaves_a_run_leased_elsewhere_to_its_holder(
    world: Engine, leased_elsewhere: tuple[IncidentWorker, RunRecorder, Any, Any]
) -> None:
    worker, runs, res, _ = leased_elsewhere
    with pytest.raises(TimeoutError):
        worker.drain(timeout_s=0.5)
    runs.wait_for(1)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 5  # no wait for the other process's lease
    assert worker.pending() == 0
    assert incident(world, res.incident_id).status == IncidentStatus.open


def test_recover_queues_an_incident_whose_settled_request_was_never_resumed(
    engine: Engine, make_worker: MakeWorker
) -> None:
    from datetime import timedelta

    from guardrails.models import ApprovalRequest, RequestStatus

    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker)
    settled = make_pending_request(engine, incident_id="inc-settled", order_id="O1")
    waiting = make_pending_request(engine, incident_id="inc-waiting", order_id="O2")
    with Session(engine) as s:
        for incident_id, request_id in (("inc-settled", settled), ("inc-waiting", waiting)):  # as assess sets it
            s.execute(update(Incident).where(col(Incident.id) == incident_id).values(request_id=request_id))
        s.execute(
            update(ApprovalRequest).where(col(ApprovalRequest.id) == settled).values(status=RequestStatus.resolved)
        )
        s.commit()
    assert worker.recover(older_than_s=60) == []  # settled just now: a resume may be under way
    with Session(engine) as s:
        s.execute(
            update(Incident).where(col(Incident.id) == "inc-settled").values(updated_at=NOW - timedelta(seconds=61))
        )
        s.commit()
    assert worker.recover(older_than_s=60) == ["inc-settled"]
    worker.drain(timeout_s=WAIT_S)
    assert runs.incident_ids == ["inc-settled"]


def test_a_settled_decision_not_resumed_here_queues_a_run(engine: Engine, make_worker: MakeWorker) -> None:
    worker = make_worker(engine, intake_debounce_ms=QUIET, intake_max_wait_ms=QUIET)
    runs = record_runs(worker)
    outcomes = {
        "held": SimpleNamespace(resumed=False, incident=SimpleNamespace(incident_id="inc-held")),
        "resumed": SimpleNamespace(resumed=True, incident=SimpleNamespace(incident_id="inc-resumed")),
        "open": SimpleNamespace(resumed=False, incident=None),  # steps still wait: nothing to resume
    }
    runtime_of(worker).decide = lambda **kw: outcomes[kw["request_id"]]
    for request_id in outcomes:
        assert worker.decide(request_id=request_id) is outcomes[request_id]
    assert worker.pending() == 1
    worker.drain(timeout_s=WAIT_S)
    assert runs.incident_ids == ["inc-held"]


def test_an_event_that_joined_after_the_last_follow_up_check_is_found_and_planned(
    sqlite_only_engine: Engine, make_worker: MakeWorker
) -> None:
    """The race this covers: an event joins an incident while another process runs it, and commits
    after that run's last follow-up check; the process that took it in stops before its queued run.
    The incident ended (resolved) with one event more than it checked: recovery finds it, and the run
    plans the new order in a follow-up thread."""
    from datetime import timedelta

    from agent.runtime import AgentRuntime
    from tests.agent.factories import NOW as AGENT_NOW
    from tests.agent.factories import ScriptedPlanner, build_world, event, step
    from tools.events import ExceptionType

    engine = sqlite_only_engine
    build_world(engine, n_orders=5)
    coupon = step("issue_compensation", {"order_id": "o1", "kind": "coupon", "amount_cents": 500, "reason": "late"})
    rt = AgentRuntime(
        engine=engine,
        settings=settings_for(engine),
        clock=FakeClock(AGENT_NOW),
        planner=ScriptedPlanner([coupon]),
    )
    worker = IncidentWorker(
        engine=engine, settings=settings_for(engine), metrics=Metrics(), clock=FakeClock(AGENT_NOW), runtime=rt
    )
    try:
        (first,) = rt.ingest([event("e1", ExceptionType.stockout_after_payment, ["o0", "o1", "o2", "o3"])])
        iid = first.incident_id
        assert rt.run_incident(iid).status == "resolved"
        assert incident(engine, iid).checked_events == 1
        assert worker.recover() == []
        with Session(engine) as s:  # the other process's run is still going when the event joins ...
            s.execute(update(Incident).where(col(Incident.id) == iid).values(status=IncidentStatus.executing))
            s.commit()
        (late,) = rt.ingest([event("e2", ExceptionType.stockout_after_payment, ["o1", "o4"])])  # joins by o1
        assert late.incident_id == iid
        with Session(engine) as s:  # ... and ends after its last check
            s.execute(
                update(Incident)
                .where(col(Incident.id) == iid)
                .values(status=IncidentStatus.resolved, updated_at=AGENT_NOW - timedelta(minutes=5))
            )
            s.commit()
        assert worker.recover(older_than_s=60) == [iid]
        worker.drain(timeout_s=WAIT_S)
        done = incident(engine, iid)
        assert done.thread_id == f"{iid}:2" and done.checked_events == 2
        assert done.status == IncidentStatus.resolved
        assert worker.recover() == []
    finally:
        worker.stop()

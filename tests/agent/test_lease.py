"""Run leases across processes (agent.lease): one holder at a time, expiry and renewal, the take-over
of a dead local holder; the runtime does not run an incident leased elsewhere, and a thread whose
approval request was settled but never resumed is resumed by the next run of its incident."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from agent.lease import LeaseKeeper, holder_is_dead, process_holder
from agent.models import Incident, RunLease
from agent.plan import Plan
from agent.runtime import AgentRuntime
from agent.settings import Settings
from audit.models import DecisionRecord
from tools.clock import FakeClock
from tools.db import session_scope
from tools.events import ExceptionType
from tools.models import Compensation

from .factories import NOW, ScriptedPlanner, build_world, event, step

COUPON = step("issue_compensation", {"order_id": "o1", "kind": "coupon", "amount_cents": 500, "reason": "late"})
REFUND = step("issue_compensation", {"order_id": "o0", "kind": "refund", "amount_cents": 1500, "reason": "late"})


class Wall:
    """A wall clock the test moves (epoch seconds)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lease_holder(engine: Engine, incident_id: str) -> tuple[str, float] | None:
    """Who holds the incident's lease and until when (epoch seconds), or None."""
    with Session(engine) as s:
        row = s.get(RunLease, incident_id)
        return None if row is None else (row.holder, row.expires_at)


def put_lease(engine: Engine, incident_id: str, holder: str, expires_at: float) -> None:
    with session_scope(engine) as s:
        s.add(RunLease(incident_id=incident_id, holder=holder, acquired_at=0.0, expires_at=expires_at))


@pytest.fixture
def keepers(engine: Engine) -> Iterator[tuple[Wall, LeaseKeeper, LeaseKeeper]]:
    """Two processes' keepers ("a" and "b", ttl 10 s) on one wall clock the test moves."""
    wall = Wall()
    a = LeaseKeeper(engine, holder="a", ttl_s=10, wall=wall)
    b = LeaseKeeper(engine, holder="b", ttl_s=10, wall=wall)
    try:
        yield wall, a, b
    finally:
        a.close()
        b.close()


@contextmanager
def fenced_write(engine: Engine, keeper: LeaseKeeper, marker: str) -> Iterator[None]:
    """A write transaction of a run of inc-1 (a row named ``marker``), fenced by ``keeper`` before it
    commits; the block runs after the fence, inside the transaction."""
    with session_scope(engine) as s:
        s.add(RunLease(incident_id=marker, holder="x", acquired_at=0.0, expires_at=0.0))
        s.flush()
        keeper.fence("inc-1", s)
        yield


# ---- the keeper -----------------------------------------------------------------------------------


def test_one_holder_at_a_time_and_release_frees_it(engine: Engine) -> None:
    a, b = LeaseKeeper(engine, holder="a"), LeaseKeeper(engine, holder="b")
    try:
        assert a.try_acquire("inc-1")
        assert not b.try_acquire("inc-1")
        assert b.try_acquire("inc-2")  # leases are per incident
        assert lease_holder(engine, "inc-1") is not None and lease_holder(engine, "inc-1")[0] == "a"  # type: ignore[index]
        a.release("inc-1")
        assert lease_holder(engine, "inc-1") is None
        assert b.try_acquire("inc-1")
    finally:
        a.close()
        b.close()
    assert lease_holder(engine, "inc-1") is None and lease_holder(engine, "inc-2") is None  # close gives back


def test_nested_holds_release_at_the_outermost(engine: Engine) -> None:
    a, b = LeaseKeeper(engine, holder="a"), LeaseKeeper(engine, holder="b")
    try:
        with a.hold("inc-1") as outer:
            with a.hold("inc-1") as inner:
                assert outer and inner
            assert not b.try_acquire("inc-1")  # still held by the outer hold
        assert b.try_acquire("inc-1")
    finally:
        a.close()
        b.close()


def test_an_expired_lease_is_taken_over_and_renewal_keeps_one(
    engine: Engine, keepers: tuple[Wall, LeaseKeeper, LeaseKeeper]
) -> None:
    wall, a, b = keepers
    assert a.try_acquire("inc-1")
    wall.t += 6
    assert a.renew() == []  # now expires at +16
    wall.t += 6
    assert not b.try_acquire("inc-1")  # +12: renewed, still a's
    wall.t += 5
    assert b.try_acquire("inc-1")  # +17: expired, b takes it
    assert a.renew() == ["inc-1"]  # a learns it lost the lease
    held = lease_holder(engine, "inc-1")
    assert held is not None and held[0] == "b"
    a.release("inc-1")  # a's release does not free b's lease
    held = lease_holder(engine, "inc-1")
    assert held is not None and held[0] == "b"


def test_a_fenced_write_lands_only_while_the_lease_is_held(
    engine: Engine, keepers: tuple[Wall, LeaseKeeper, LeaseKeeper]
) -> None:
    """The fence runs in the writer's own transaction: held, the write commits (the lease unchanged);
    taken over, it raises and the whole transaction (the write included) rolls back."""
    from agent.lease import LeaseLost

    wall, a, b = keepers
    assert a.try_acquire("inc-1")
    wall.t += 8
    with fenced_write(engine, a, "written-1"):
        pass
    assert lease_holder(engine, "inc-1") == ("a", wall.t - 8 + 10)
    wall.t += 3
    assert b.try_acquire("inc-1")  # a stalled past the ttl
    with pytest.raises(LeaseLost), fenced_write(engine, a, "written-2"):
        pass
    assert lease_holder(engine, "written-1") is not None and lease_holder(engine, "written-2") is None
    assert not a.confirm("inc-1")  # and the run stops at its next check too
    held = lease_holder(engine, "inc-1")
    assert held is not None and held[0] == "b"


def test_a_takeover_waits_for_the_fenced_transaction_to_commit(
    engine: Engine, keepers: tuple[Wall, LeaseKeeper, LeaseKeeper]
) -> None:
    """The fence and the commit are one: a process taking over an expired lease while the holder's
    fenced transaction is open waits for its commit (the row lock on PostgreSQL, the write lock on
    SQLite), so the holder's write lands before the taker holds the lease, never beside its run."""
    wall, a, b = keepers
    fenced = threading.Event()
    taken: list[tuple[bool, bool]] = []  # (b took it, a's write was there when b had it)
    assert a.try_acquire("inc-1")
    wall.t += 11  # expired: a stalled, b may take it

    def take() -> None:
        assert fenced.wait(10)
        took = b.try_acquire("inc-1")
        taken.append((took, lease_holder(engine, "written") is not None))

    taker = threading.Thread(target=take)
    taker.start()
    with fenced_write(engine, a, "written"):
        fenced.set()
        taker.join(0.5)
        assert taker.is_alive() and taken == []  # waiting for this transaction
    taker.join(30)
    assert taken == [(True, True)]


def with_part(holder: str, index: int, value: str) -> str:
    parts = holder.split("/")
    parts[index] = value
    return "/".join(parts)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process identity comes from /proc")
def test_a_dead_local_holder_is_taken_over_at_once_a_live_or_doubtful_one_is_not(engine: Engine) -> None:
    far = time.time() + 3600
    dead = process_holder(dead_pid())
    live = process_holder()  # this very process, another keeper
    cases = {
        "inc-dead": dead,
        "inc-reused-pid": with_part(live, 2, "1"),  # this pid, but a process started at another time
        "inc-live": live,
        "inc-other-host": with_part(dead, 0, "elsewhere.example"),
        "inc-other-boot": with_part(dead, 3, "00000000"),
        "inc-other-namespace": with_part(dead, 4, "1"),
        "inc-old-format": f"{socket.gethostname()}:{dead_pid()}:x",
    }
    for incident_id, holder in cases.items():
        put_lease(engine, incident_id, holder, far)
    k = LeaseKeeper(engine, holder="k")
    try:
        taken = {incident_id for incident_id in cases if k.try_acquire(incident_id)}
    finally:
        k.close()
    assert taken == {"inc-dead", "inc-reused-pid"}
    assert holder_is_dead(dead) and not holder_is_dead(live)


@pytest.mark.parametrize("left", ["free", "expired", "dead holder"])
def test_racing_processes_never_both_get_a_lease(engine: Engine, left: str) -> None:
    if left == "expired":
        put_lease(engine, "inc-1", "gone-by-now", time.time() - 1)
    elif left == "dead holder":
        put_lease(engine, "inc-1", process_holder(dead_pid()), time.time() + 3600)
    keepers = [LeaseKeeper(engine, holder=f"p{i}") for i in range(6)]
    barrier = threading.Barrier(len(keepers))
    got: list[str] = []

    def race(k: LeaseKeeper) -> None:
        barrier.wait(10)
        if k.try_acquire("inc-1"):
            got.append(k.holder)

    threads = [threading.Thread(target=race, args=(k,)) for k in keepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert len(got) == 1
        held = lease_holder(engine, "inc-1")
        assert held is not None and held[0] == got[0]
    finally:
        for k in keepers:
            k.close()


def test_another_thread_of_the_process_is_refused_and_a_closed_keeper_takes_nothing(engine: Engine) -> None:
    k = LeaseKeeper(engine, holder="k")
    assert k.try_acquire("inc-1")
    other: list[bool] = []
    t = threading.Thread(target=lambda: other.append(k.try_acquire("inc-1")))
    t.start()
    t.join(10)
    assert other == [False]
    k.release("inc-1")
    k.close()
    with pytest.raises(RuntimeError):
        k.try_acquire("inc-2")


def test_confirm_asks_the_database_once_its_last_answer_is_old(engine: Engine) -> None:
    wall = Wall()
    a = LeaseKeeper(engine, holder="a", ttl_s=0.3, wall=wall)
    b = LeaseKeeper(engine, holder="b", ttl_s=0.3, wall=wall)
    try:
        a._stop.set()  # no background renewals: this test is about confirm alone
        assert a.try_acquire("inc-1")
        assert a.confirm("inc-1")
        wall.t += 1  # a stalled: its lease expired and b took it
        assert b.try_acquire("inc-1")
        assert a.confirm("inc-1")  # within a third of the ttl of the last answer: not asked again
        time.sleep(0.15)
        assert not a.confirm("inc-1")
        assert not a.confirm("inc-1")  # and stays lost
    finally:
        a.close()
        b.close()


def test_the_keeper_renews_held_leases_in_the_background(engine: Engine) -> None:
    k = LeaseKeeper(engine, holder="k", ttl_s=0.6)
    try:
        assert k.try_acquire("inc-1")
        first = lease_holder(engine, "inc-1")
        assert first is not None
        deadline = time.monotonic() + 10
        while (now := lease_holder(engine, "inc-1")) is not None and now[1] <= first[1]:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
    finally:
        k.close()


# ---- the runtime ----------------------------------------------------------------------------------


def runtime(engine: Engine, steps: list[Any], planner: Any = None) -> AgentRuntime:
    return AgentRuntime(
        engine=engine,
        settings=Settings(approval_ttl_s=600),
        clock=FakeClock(NOW),
        planner=planner or ScriptedPlanner(steps),
    )


def opened(engine: Engine, rt: AgentRuntime) -> str:
    build_world(engine)
    [res] = rt.ingest([event("e1", ExceptionType.stockout_after_payment, ["o0", "o1", "o2", "o3"])])
    return res.incident_id


def records(engine: Engine, incident_id: str, stage: str | None = None) -> list[DecisionRecord]:
    with Session(engine) as s:
        stmt = select(DecisionRecord).where(DecisionRecord.incident_id == incident_id)
        if stage:
            stmt = stmt.where(DecisionRecord.stage == stage)
        return list(s.exec(stmt.order_by(col(DecisionRecord.seq))))


def comps(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return sorted(c.kind for c in s.exec(select(Compensation)))


def test_a_run_leased_elsewhere_does_nothing_until_the_lease_is_free(engine: Engine) -> None:
    rt = runtime(engine, [COUPON])
    other = LeaseKeeper(engine, holder="another-process")
    try:
        iid = opened(engine, rt)
        assert other.try_acquire(iid)
        out = rt.run_incident(iid)
        assert out.held_elsewhere and out.status == "open" and out.plan is None
        assert records(engine, iid) == []
        other.release(iid)
        out = rt.run_incident(iid)
        assert not out.held_elsewhere and out.status == "resolved"
        assert comps(engine) == ["coupon"]
        assert lease_holder(engine, iid) is None  # given back after the run
    finally:
        other.close()
        rt.close()


class HeldPlanner(ScriptedPlanner):
    """Stops in the middle of planning until the test lets it go (or runs ``during`` there)."""

    def __init__(self, steps: list[Any], during: Any = None) -> None:
        super().__init__(steps)
        self.entered, self.release = threading.Event(), threading.Event()
        self.during = during

    def plan(self, *args: Any) -> Plan:
        self.entered.set()
        if self.during is not None:
            self.during()
        else:
            assert self.release.wait(30), "never released"
        return super().plan(*args)


def test_a_second_process_does_not_run_an_incident_the_first_is_running(engine: Engine) -> None:
    """Two runtimes (as two service instances: their own locks and leases): while the first is in the
    middle of the incident's run, the second's run is told it is held elsewhere and does nothing; one
    plan, one of each record."""
    planner = HeldPlanner([COUPON])
    a, b = runtime(engine, [COUPON], planner), runtime(engine, [COUPON])
    try:
        iid = opened(engine, a)
        first: list[Any] = []
        t = threading.Thread(target=lambda: first.append(a.run_incident(iid)))
        t.start()
        assert planner.entered.wait(30)
        second = b.run_incident(iid)
        assert second.held_elsewhere and second.plan is None
        planner.release.set()
        t.join(60)
        assert not first[0].held_elsewhere and first[0].error is None and first[0].status == "resolved"
        assert b.run_incident(iid).status == "resolved"  # the lease is free again: nothing left to do
        assert comps(engine) == ["coupon"]
        stages = [r.stage for r in records(engine, iid)]
        for stage in ("intake", "investigation", "proposal", "verdict", "execution", "report"):
            assert stages.count(stage) == 1, (stage, stages)
    finally:
        a.close()
        b.close()


def test_a_run_that_lost_its_lease_stops_at_the_next_node_and_the_holder_goes_on(engine: Engine) -> None:
    """The process stalled past the ttl (here: another holder takes the row while it plans, and the
    keeper's next renewal finds out): the node it was in writes nothing (its transaction is fenced by
    the lease) and the run stops there, without failing the incident; once the lease is free again, the
    next run goes on from the last checkpoint and plans once."""
    rt: AgentRuntime | None = None
    stalls: list[int] = []

    def stolen() -> None:
        if stalls:  # the next run plans again (nothing of the first plan landed): no stall this time
            return
        stalls.append(1)
        with session_scope(engine) as s:
            row = s.get(RunLease, iid)
            assert row is not None
            row.holder, row.expires_at = "thief", time.time() + 3600
            s.add(row)
        assert rt is not None and rt.leases is not None
        assert rt.leases.renew() == [iid]  # the keeper thread's next tick

    rt = runtime(engine, [COUPON], HeldPlanner([COUPON], during=stolen))
    try:
        iid = opened(engine, rt)
        out = rt.run_incident(iid)
        assert out.held_elsewhere and out.error is None and out.status != "failed"
        stages = [r.stage for r in records(engine, iid)]
        assert "investigation" in stages and "proposal" not in stages and "error" not in stages
        assert comps(engine) == []
        with session_scope(engine) as s:  # the thief's run ends and gives the lease back
            row = s.get(RunLease, iid)
            assert row is not None
            s.delete(row)
        out = rt.run_incident(iid)
        assert out.status == "resolved" and comps(engine) == ["coupon"]
        stages = [r.stage for r in records(engine, iid)]
        assert stages.count("proposal") == 1 and stages.count("verdict") == 1
    finally:
        rt.close()


def test_a_settled_request_never_resumed_is_resumed_by_the_next_run(engine: Engine) -> None:
    """The decision committed, then the process stopped before resuming (or another held the lease):
    the thread still waits on a request that no longer waits. The next run of the incident resumes it."""
    from guardrails.service import decide_step

    rt = runtime(engine, [COUPON, REFUND])
    try:
        iid = opened(engine, rt)
        out = rt.run_incident(iid)
        assert out.waiting and out.request_id
        with session_scope(engine) as s:  # decided directly: no resume follows
            decide_step(
                session=s,
                request_id=out.request_id,
                step_index=1,
                decision="approve",
                actor_id="sup-1",
                actor_role="supervisor",
                now=NOW,
            )
        assert rt.outcome(iid).waiting and comps(engine) == ["coupon"]
        out = rt.run_incident(iid)
        assert not out.waiting and out.status == "resolved"
        assert comps(engine) == ["coupon", "refund"]
        assert rt.run_incident(iid).status == "resolved" and comps(engine) == ["coupon", "refund"]
    finally:
        rt.close()


def test_a_decision_whose_resume_is_held_elsewhere_is_not_lost(engine: Engine) -> None:
    rt = runtime(engine, [COUPON, REFUND])
    other = LeaseKeeper(engine, holder="another-process")
    try:
        iid = opened(engine, rt)
        out = rt.run_incident(iid)
        assert out.waiting and out.request_id
        assert other.try_acquire(iid)
        d = rt.decide(
            request_id=out.request_id, step_index=1, decision="approve", actor_id="sup-1", actor_role="supervisor"
        )
        assert d.result.request_resolved and not d.resumed
        assert comps(engine) == ["coupon"]
        other.release(iid)
        assert rt.run_incident(iid).status == "resolved"
        assert comps(engine) == ["coupon", "refund"]
        with Session(engine) as s:
            inc = s.get(Incident, iid)
            assert inc is not None and inc.step_status["1"] == "executed"
    finally:
        other.close()
        rt.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process identity comes from /proc")
def test_a_lease_left_by_a_killed_process_on_this_host_does_not_block_a_restart(engine: Engine) -> None:
    rt = runtime(engine, [COUPON])
    try:
        iid = opened(engine, rt)
        put_lease(engine, iid, process_holder(dead_pid()), time.time() + 3600)
        out = rt.run_incident(iid)
        assert not out.held_elsewhere and out.status == "resolved"
    finally:
        rt.close()


def test_a_give_back_the_database_refused_leaves_no_phantom_hold(
    engine: Engine, keepers: tuple[Wall, LeaseKeeper, LeaseKeeper], monkeypatch: Any
) -> None:
    """The DELETE fails (the database is away): the process no longer counts the lease as held (so
    another of its threads is not refused forever, and the keeper stops renewing it); the row expires,
    and this process can take it again at once."""
    _, a, b = keepers
    assert a.try_acquire("inc-1")

    class Away(RuntimeError):
        pass

    def refuse() -> Any:
        raise Away("database away")

    monkeypatch.setattr(a, "engine", SimpleNamespace(begin=refuse))
    with pytest.raises(Away):
        a.release("inc-1")
    monkeypatch.setattr(a, "engine", engine)
    assert a.holding() == []
    assert not b.try_acquire("inc-1")  # the row is still there, not expired
    other: list[bool] = []
    t = threading.Thread(target=lambda: other.append(a.try_acquire("inc-1")))
    t.start()
    t.join(10)
    assert other == [True]  # another thread of the same process takes it again


def test_an_ended_incident_whose_checkpoints_are_gone_is_not_run_again(engine: Engine) -> None:
    """Recovery may run an ended incident (an event joined after its last check); if its thread's
    checkpoints were lost (a database restored without them), nothing is planned or paid again."""
    rt = runtime(engine, [COUPON])
    try:
        iid = opened(engine, rt)
        assert rt.run_incident(iid).status == "resolved"
        before = [r.stage for r in records(engine, iid)]
        rt.checkpointer.delete_thread(iid)
        out = rt.run_incident(iid)
        assert out.status == "resolved" and out.error is None
        assert [r.stage for r in records(engine, iid)] == before
        assert comps(engine) == ["coupon"]
    finally:
        rt.close()

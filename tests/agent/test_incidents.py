"""Incidents from events: idempotent by event id, correlated by family + zone + window or by order."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from agent.incidents import IngestResult, incident_event_ids, incident_payloads, ingest_event, ingest_events
from agent.models import Incident, IncidentEvent, IncidentStatus
from tools.db import session_scope
from tools.events import ExceptionEvent, ExceptionType

T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
WINDOW = 600


def ev(
    eid: str,
    typ: ExceptionType,
    *,
    zone: str = "z1",
    minutes: float = 0,
    orders: list[str] | None = None,
    **payload: object,
) -> ExceptionEvent:
    return ExceptionEvent(
        id=eid,
        type=typ,
        occurred_at=T0 + timedelta(minutes=minutes),
        zone=zone,
        order_ids=orders or [],
        payload=dict(payload),
    )


def count(session: Session, model: type) -> int:
    return int(session.exec(select(func.count()).select_from(model)).one())


def test_same_event_id_twice_has_one_effect(engine: Engine) -> None:
    e = ev("e1", ExceptionType.rider_offline, orders=["o1"])
    with session_scope(engine) as s:
        first = ingest_event(session=s, event=e, now=T0, window_s=WINDOW)
    with session_scope(engine) as s:
        again = ingest_event(session=s, event=e, now=T0, window_s=WINDOW)
    assert first.new_incident and not first.duplicate
    assert again.duplicate and again.incident_id == first.incident_id and not again.new_incident
    with Session(engine) as s:
        assert count(s, IncidentEvent) == 1
        inc = s.get(Incident, first.incident_id)
        assert inc is not None and inc.event_count == 1 and inc.thread_id == inc.id
        assert incident_event_ids(session=s, incident_id=inc.id) == ["e1"]


def test_storm_events_in_one_zone_open_one_incident(engine: Engine) -> None:
    events = [ev("w1", ExceptionType.weather_slowdown, speed_factor=0.6)]
    events += [ev(f"late-{i}", ExceptionType.order_late_risk, minutes=i / 200, orders=[f"o{i}"]) for i in range(278)]
    events.append(ev("short-1", ExceptionType.rider_shortage, minutes=1.5))
    with session_scope(engine) as s:
        results = ingest_events(session=s, events=events, now=T0, window_s=WINDOW)
    assert len({r.incident_id for r in results}) == 1
    assert sum(r.new_incident for r in results) == 1
    with Session(engine) as s:
        inc = s.get(Incident, results[0].incident_id)
        assert inc is not None
        assert inc.family == "delivery_delay" and inc.type == "weather_slowdown"
        assert len(inc.order_ids) == 278 and inc.event_count == 280
        ids = incident_event_ids(session=s, incident_id=inc.id)
        assert ids == ["w1", *(f"late-{i}" for i in range(278)), "short-1"]  # the order they joined
        payloads = incident_payloads(session=s, incident_id=inc.id)
        assert payloads[0]["speed_factor"] == 0.6 and payloads[0]["event_id"] == "w1"


def test_other_zone_or_outside_window_opens_another_incident(engine: Engine) -> None:
    with session_scope(engine) as s:
        a = ingest_event(
            session=s, event=ev("a", ExceptionType.order_late_risk, orders=["o1"]), now=T0, window_s=WINDOW
        )
        b = ingest_event(
            session=s, event=ev("b", ExceptionType.order_late_risk, zone="z2", orders=["o2"]), now=T0, window_s=WINDOW
        )
        c = ingest_event(
            session=s, event=ev("c", ExceptionType.order_late_risk, minutes=11, orders=["o3"]), now=T0, window_s=WINDOW
        )
        d = ingest_event(
            session=s, event=ev("d", ExceptionType.order_late_risk, minutes=5, orders=["o4"]), now=T0, window_s=WINDOW
        )
    assert len({a.incident_id, b.incident_id, c.incident_id}) == 3
    assert d.incident_id == a.incident_id  # within 10 minutes of a's last event


def test_event_about_an_order_already_in_an_open_incident_joins_it(engine: Engine) -> None:
    with session_scope(engine) as s:
        storm = ingest_event(
            session=s, event=ev("w", ExceptionType.order_late_risk, orders=["o1", "o2"]), now=T0, window_s=WINDOW
        )
        complaint = ingest_event(
            session=s,
            event=ev(
                "c",
                ExceptionType.customer_complaint,
                zone="elsewhere",
                minutes=30,
                orders=["o2"],
                text="where is my food",
            ),
            now=T0,
            window_s=WINDOW,
        )
        other = ingest_event(
            session=s, event=ev("c2", ExceptionType.customer_complaint, orders=["o9"]), now=T0, window_s=WINDOW
        )
    assert complaint.incident_id == storm.incident_id and not complaint.new_incident
    assert other.new_incident  # complaints about other orders are their own case, even in the zone


def test_closed_incident_is_not_joined(engine: Engine) -> None:
    with session_scope(engine) as s:
        first = ingest_event(
            session=s, event=ev("a", ExceptionType.rider_offline, orders=["o1"]), now=T0, window_s=WINDOW
        )
        inc = s.get(Incident, first.incident_id)
        assert inc is not None
        inc.status = IncidentStatus.resolved
        s.add(inc)
    with session_scope(engine) as s:
        again = ingest_event(
            session=s, event=ev("b", ExceptionType.rider_offline, orders=["o1"]), now=T0, window_s=WINDOW
        )
    assert again.new_incident and again.incident_id != first.incident_id


def test_concurrent_deliveries_of_one_event_have_one_effect(engine: Engine) -> None:
    e = ev("dup", ExceptionType.stalled_in_transit, orders=["o1"])
    barrier = threading.Barrier(4)
    results: list[IngestResult] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait()
            with session_scope(engine) as s:
                results.append(ingest_event(session=s, event=e, now=T0, window_s=WINDOW))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(engine) as s:
        assert count(s, IncidentEvent) == 1
        assert count(s, Incident) == 1
    # a loser either saw the row (duplicate) or lost the insert race and its transaction failed cleanly
    assert sum(1 for r in results if not r.duplicate) <= 1
    assert len(results) + len(errors) == 4


def _ingest_concurrently(engine: Engine, first: ExceptionEvent, second: ExceptionEvent) -> None:
    """``first`` ingested and held uncommitted while ``second`` is ingested by another session (as two
    service processes would), then both commit."""
    ingested, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_first() -> None:
        try:
            with session_scope(engine) as s:
                ingest_event(session=s, event=first, now=T0, window_s=WINDOW)
                ingested.set()
                release.wait(10)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
            ingested.set()

    def then_second() -> None:
        try:
            with session_scope(engine) as s:
                ingest_event(session=s, event=second, now=T0, window_s=WINDOW)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t1 = threading.Thread(target=hold_first)
    t1.start()
    assert ingested.wait(10)
    t2 = threading.Thread(target=then_second)
    t2.start()
    t2.join(0.5)  # the second has read the open incidents by now, unless intake serialises it
    release.set()
    t1.join()
    t2.join()
    assert errors == []


def test_concurrent_events_about_one_order_open_one_incident(engine: Engine) -> None:
    _ingest_concurrently(
        engine,
        ev("c1", ExceptionType.customer_complaint, orders=["o0"], text="late"),
        ev("a1", ExceptionType.address_change, orders=["o0"], new_address="x"),
    )
    with Session(engine) as s:
        naming = [i.id for i in s.exec(select(Incident)) if "o0" in i.order_ids]
        assert len(naming) == 1 and count(s, IncidentEvent) == 2


def test_concurrent_events_joining_one_incident_keep_every_order(engine: Engine) -> None:
    with session_scope(engine) as s:
        [opened] = ingest_events(
            session=s, events=[ev("f0", ExceptionType.rider_offline, orders=["o1"])], now=T0, window_s=WINDOW
        )
    _ingest_concurrently(
        engine,
        ev("f1", ExceptionType.rider_offline, orders=["o1", "o5"]),
        ev("f2", ExceptionType.rider_offline, orders=["o1", "o6"]),
    )
    with Session(engine) as s:
        inc = s.get(Incident, opened.incident_id)
        assert inc is not None and sorted(inc.order_ids) == ["o1", "o5", "o6"] and inc.event_count == 3
        seqs = s.exec(select(IncidentEvent.seq).where(IncidentEvent.incident_id == inc.id)).all()
        assert sorted(seqs) == [0, 1, 2]


# --- late events: a follow-up thread on the same incident -------------------------------------------


class RecordingPlanner:
    """First plan: a refund on o0 (waits for approval) and a notice per order; later plans: a notice
    per order of the brief. Keeps every brief it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.briefs: list[Any] = []

    def plan(self, incident: Any, snapshot: dict[str, Any], ctx: Any) -> Any:
        from agent.plan import Plan

        from .factories import step

        self.briefs.append(incident)
        steps = []
        if len(self.briefs) == 1:
            steps.append(
                step("issue_compensation", {"order_id": "o0", "kind": "refund", "amount_cents": 900, "reason": "r"})
            )
        steps += [step("notify_customer", {"order_id": o, "template": "generic_apology"}) for o in incident.order_ids]
        steps = [s.model_copy(update={"index": i}) for i, s in enumerate(steps)]
        return Plan(incident_id=incident.id, planner=self.name, steps=steps, confidence=0.95)


def test_event_joining_after_the_plan_gets_a_follow_up_thread(sqlite_only_engine: Engine) -> None:
    from agent.runtime import AgentRuntime
    from agent.settings import Settings
    from tools.clock import FakeClock
    from tools.models import Compensation, Notification

    from .factories import NOW, build_world, event

    engine = sqlite_only_engine
    build_world(engine)
    planner = RecordingPlanner()
    rt = AgentRuntime(engine=engine, settings=Settings(approval_ttl_s=600), clock=FakeClock(NOW), planner=planner)
    try:
        [first] = rt.ingest([event("off-1", ExceptionType.rider_offline, ["o0", "o1"])])
        out = rt.run_incident(first.incident_id)
        assert out.waiting and out.request_id  # the refund waits for a supervisor
        # a second rider goes offline meanwhile: same family, zone and window -> joins the open incident
        [late] = rt.ingest([event("off-2", ExceptionType.rider_offline, ["o2"])])
        assert late.incident_id == first.incident_id and not late.new_incident
        assert len(planner.briefs) == 1  # nothing re-planned while the first plan waits
        rt.decide(
            request_id=out.request_id,
            step_index=0,
            decision="approve",
            actor_id="sup-1",
            actor_role="supervisor",
        )
        # the first plan finished; o2 was never planned for: a follow-up thread plans only for it
        assert len(planner.briefs) == 2
        assert planner.briefs[1].order_ids == ["o2"] and planner.briefs[1].follow_up
        final = rt.run_incident(first.incident_id)
        assert len(planner.briefs) == 2  # covered now: running again starts no third thread
        assert final.status == IncidentStatus.resolved.value
        with Session(engine) as s:
            inc = s.get(Incident, first.incident_id)
            assert inc is not None and inc.thread_id == f"{first.incident_id}:2"
            told = {n.order_id for n in s.exec(select(Notification))}
            assert told == {"o0", "o1", "o2"}
            assert [c.amount_cents for c in s.exec(select(Compensation))] == [900]  # paid once
        assert rt.graph.get_state(rt.config(f"{first.incident_id}:2")).values["focus_order_ids"] == ["o2"]
    finally:
        rt.close()


def test_event_after_the_incident_resolved_opens_a_new_incident(sqlite_only_engine: Engine) -> None:
    from agent.runtime import AgentRuntime
    from agent.settings import Settings
    from tools.clock import FakeClock

    from .factories import NOW, build_world, event

    engine = sqlite_only_engine
    build_world(engine)
    planner = RecordingPlanner()
    rt = AgentRuntime(engine=engine, settings=Settings(approval_ttl_s=600), clock=FakeClock(NOW), planner=planner)
    try:
        [first] = rt.ingest([event("st-1", ExceptionType.stalled_in_transit, ["o1"])])
        planner.briefs.append(None)  # skip the refund: the first plan only notifies
        assert rt.run_incident(first.incident_id).status == IncidentStatus.resolved.value
        [again] = rt.ingest([event("st-2", ExceptionType.stalled_in_transit, ["o1"])])
        assert again.new_incident and again.incident_id != first.incident_id
        assert rt.run_incident(again.incident_id).status == IncidentStatus.resolved.value
        assert rt.run_incident(first.incident_id).status == IncidentStatus.resolved.value  # no follow-up
        assert len(planner.briefs) == 3
    finally:
        rt.close()


# --- events of another family joining by an order -----------------------------------------------------


def _rider_gone_with(engine: Engine, orders: list[str]) -> None:
    """The test world with rider r1 offline while carrying ``orders``, and o0's milk short."""
    from tools.models import Order, OrderLine, Rider, RiderStatus
    from tools.state_machine import OrderStatus

    from .factories import build_world

    build_world(engine)
    with session_scope(engine) as s:
        rider = s.get(Rider, "r1")
        assert rider is not None
        rider.status = RiderStatus.offline
        for oid in orders:
            order = s.get(Order, oid)
            assert order is not None
            order.status, order.rider_id = OrderStatus.assigned, "r1"
        line = s.exec(select(OrderLine).where(OrderLine.order_id == "o0")).one()
        line.status = "short"


def _riders_of(engine: Engine, orders: list[str]) -> list[str | None]:
    from tools.models import Order

    with Session(engine) as s:
        return [o.rider_id for o in (s.get(Order, oid) for oid in orders) if o is not None]


def test_a_rider_offline_event_joining_a_stockout_incident_gets_its_reassignment(sqlite_only_engine: Engine) -> None:
    # the stockout playbook fixes shelves, it does not hand a gone rider's orders over: the joined
    # event is planned with its own family's playbook too, in the same plan
    from agent.planners.playbook import PlaybookPlanner
    from agent.runtime import AgentRuntime
    from agent.settings import Settings
    from tools.clock import FakeClock

    from .factories import NOW, event

    engine = sqlite_only_engine
    _rider_gone_with(engine, ["o0", "o1"])
    rt = AgentRuntime(engine=engine, settings=Settings(), clock=FakeClock(NOW), planner=PlaybookPlanner())
    try:
        gone = event("off", ExceptionType.rider_offline, ["o0", "o1"]).model_copy(update={"rider_ids": ["r1"]})
        [stock, off] = rt.ingest([event("so", ExceptionType.stockout_after_payment, ["o0"]), gone])
        assert off.incident_id == stock.incident_id  # joined by o0
        out = rt.run_incident(stock.incident_id)
        assert out.plan is not None and out.plan["playbook"] == "stockout_after_payment+rider_offline"
        tools = [st["tool"] for st in out.plan["steps"]]
        assert "substitute_item" in tools and "apply_reassignment" in tools
        assert set(out.step_status.values()) == {"executed"}
        assert "r1" not in _riders_of(engine, ["o0", "o1"])
    finally:
        rt.close()


def test_a_late_rider_offline_event_about_planned_orders_gets_a_follow_up(sqlite_only_engine: Engine) -> None:
    # the stockout plan waits for a supervisor when the rider goes offline with o0, an order that plan
    # already covered: no new order, yet the event gets a follow-up plan of its own family
    from agent.planners.playbook import PlaybookPlanner
    from agent.runtime import AgentRuntime
    from agent.settings import Settings
    from tools.clock import FakeClock

    from .factories import NOW, event

    engine = sqlite_only_engine
    _rider_gone_with(engine, ["o0"])
    settings = Settings(approval_ttl_s=600, autonomy_overrides={"stockout_after_payment": "assist"})
    rt = AgentRuntime(engine=engine, settings=settings, clock=FakeClock(NOW), planner=PlaybookPlanner())

    def approve_all(request_id: str | None) -> None:
        assert request_id is not None
        steps = rt.outcome(iid).interrupt["steps"]  # type: ignore[index]
        for st in steps:
            rt.decide(
                request_id=request_id,
                step_index=st["index"],
                decision="approve",
                actor_id="sup",
                actor_role="supervisor",
            )

    try:
        [stock] = rt.ingest([event("so", ExceptionType.stockout_after_payment, ["o0"])])
        iid = stock.incident_id
        first = rt.run_incident(iid)
        assert first.waiting and first.plan is not None
        assert "apply_reassignment" not in [st["tool"] for st in first.plan["steps"]]
        gone = event("off", ExceptionType.rider_offline, ["o0"]).model_copy(update={"rider_ids": ["r1"]})
        [late] = rt.ingest([gone])
        assert late.incident_id == iid and not late.new_incident
        approve_all(first.request_id)
        follow = rt.outcome(iid)
        assert follow.plan is not None and follow.plan["playbook"] == "stockout_after_payment+rider_offline"
        assert [st["tool"] for st in follow.plan["steps"]] == ["apply_reassignment"]  # nothing else re-planned
        approve_all(follow.request_id)
        assert _riders_of(engine, ["o0"]) != ["r1"]
        with Session(engine) as s:
            inc = s.get(Incident, iid)
            assert inc is not None and inc.thread_id == f"{iid}:2"
        # planned now: running again starts no third thread
        rt.run_incident(iid)
        with Session(engine) as s:
            inc = s.get(Incident, iid)
            assert inc is not None and inc.thread_id == f"{iid}:2"
    finally:
        rt.close()

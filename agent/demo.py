"""The live demo behind ``make run``: a fresh city in a storm, the service, and exceptions every few seconds.

Within a minute a newcomer sees incidents open in the dispatcher view, low-risk steps executed by the
agent, and approvals waiting in the supervisor view. No network and no keys: the embedded planner runs.

The city advances in accelerated time: each tick moves the world clock a few minutes (the simulator
dispatches riders and delivers orders in between) and injects one exception, rotating through rider
offline, stockout after payment and a stalled rider. The simulator is rebuilt from the database at each
tick under the worker's run lock, so it always starts from what the agent last changed.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from agent.api.models import Role
from agent.settings import PROJECT_ROOT, Settings, get_settings
from tools.db import init_db, make_engine, session_scope
from tools.events import ExceptionEvent, ExceptionType
from tools.models import Order, OrderLine, Rider, RiderStatus
from tools.state_machine import OrderStatus

log = structlog.get_logger(__name__)

DEMO_DIR = PROJECT_ROOT / "var" / "demo"
WORLD_MINUTES_PER_TICK = 3.0
# The storm runs in auto autonomy (the agent executes what the policy allows); rider-offline and
# stockout incidents run in assist, where every write waits for a supervisor, so the approval queue
# has something in it within the first minute.
DEMO_AUTONOMY: dict[str, Any] = {"rider_offline": "assist", "stockout_after_payment": "assist"}


def fresh_database(path: Path) -> str:
    """Remove the previous demo's files, the checkpoint database beside it included (incident ids are
    deterministic, so an old checkpoint would make the new run look finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(path.stem + ".*"):
        old.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def seed_city(*, engine: Engine, seed: int) -> list[ExceptionEvent]:
    """The storm preset; returns its reference exceptions (the storm's weather and late-risk events)."""
    from tools.world.generate import generate_world

    with session_scope(engine) as session:
        world = generate_world(session=session, preset="storm", seed=seed)
        return list(world.events)


def create_demo_tokens(*, engine: Engine) -> dict[str, str]:
    from agent.api.service import create_token

    out: dict[str, str] = {}
    with session_scope(engine) as session:
        for role in Role:
            _, secret = create_token(session=session, name=f"demo-{role.value}", role=role)
            out[role.value] = secret
    return out


def mark_line_short(*, session: Session, event: ExceptionEvent) -> None:
    """The picker found an item missing: the simulator only delays the order, the line says which item."""
    for order_id in event.order_ids:
        line = session.exec(select(OrderLine).where(OrderLine.order_id == order_id, OrderLine.status == "ok")).first()
        if line is not None:
            line.status = "short"
            session.add(line)
            event.payload["sku_id"] = line.sku_id


class DemoCity:
    """Advances the world and injects exceptions on a timer, through the same intake as POST /events."""

    def __init__(
        self,
        *,
        engine: Engine,
        submit: Callable[[list[ExceptionEvent]], list[Any]],
        lock: Any,
        settle: Callable[[], None] | None = None,
        seed: int,
        every_s: float,
    ) -> None:
        self.engine = engine
        self.submit = submit
        self.lock = lock
        self.settle = settle
        self.rng = random.Random(seed)
        self.seed = seed
        self.every_s = every_s
        self.tick_no = 0
        self.stop = threading.Event()
        self.simulator_ok = True

    def run(self, initial: list[ExceptionEvent]) -> None:
        if initial:
            self.submit(initial)
            if self.settle is not None:
                # let the storm's incident finish its first run before new exceptions arrive, or they
                # would join it (they share its orders) instead of opening incidents of their own
                try:
                    self.settle()
                except TimeoutError:
                    log.warning("the storm incident is still running; injecting anyway")
        while not self.stop.wait(self.every_s):
            try:
                events = self.tick()
                if events:
                    self.submit(events)
                    log.info("demo exceptions injected", types=[e.type.value for e in events])
            except Exception:
                log.exception("demo tick failed")

    def tick(self) -> list[ExceptionEvent]:
        self.tick_no += 1
        with self.lock:
            events: list[ExceptionEvent] = []
            if self.simulator_ok:
                try:
                    events = self._simulated_tick()
                except Exception as exc:  # the demo goes on with events drawn from the database
                    log.warning("simulator unavailable for the demo; injecting from the database", error=str(exc))
                    self.simulator_ok = False
            if not self.simulator_ok:
                events = self._direct_tick()
        return [e.model_copy(update={"id": f"demo-{self.seed}-{self.tick_no}-{i}"}) for i, e in enumerate(events)]

    def _simulated_tick(self) -> list[ExceptionEvent]:
        from tools.sim.baseline import BaselineDispatcher
        from tools.sim.engine import Simulation

        with session_scope(self.engine) as session:
            sim = Simulation.from_session(session, BaselineDispatcher(), seed=self.seed + self.tick_no)
            sim.run(until=sim.now + WORLD_MINUTES_PER_TICK)
            events = self._inject(sim)
            events += sim.detect_stalled(threshold_minutes=25.0)[:2]
            sim.sync_to_session(session, actor="demo-city")
            for event in events:
                if event.type == ExceptionType.stockout_after_payment:
                    mark_line_short(session=session, event=event)
        return events

    def _inject(self, sim: Any) -> list[ExceptionEvent]:
        kind = ("rider_offline", "stockout", "stall")[self.tick_no % 3]
        if kind == "rider_offline":
            busy = [c for c in sim.couriers if c.stops and not c.offline]
            if busy:
                return [sim.inject_rider_offline(self.rng.choice(busy).id)]
        if kind == "stockout":
            picking = [
                o
                for o in sim.orders
                if o.status in (OrderStatus.confirmed, OrderStatus.picking)
                or (o.status == OrderStatus.assigned and o.ready > sim.now)
            ]
            if picking:
                return [sim.inject_stockout(self.rng.choice(picking).id)]
        carrying = [c for c in sim.couriers if c.stops and not c.offline]
        if carrying:
            sim.inject_stall(self.rng.choice(carrying).id, 40.0)
        return []

    def _direct_tick(self) -> list[ExceptionEvent]:
        """Without the simulator: pick subjects from the database and report them."""
        with Session(self.engine) as session:
            from tools.service import world_now

            now = world_now(session=session)
            kind = self.tick_no % 3
            if kind == 0:
                riders = list(session.exec(select(Rider).where(Rider.status == RiderStatus.busy)))
                if riders:
                    r = self.rng.choice(riders)
                    orders = list(session.exec(select(Order).where(Order.rider_id == r.id)))
                    return [
                        ExceptionEvent(
                            id="x",
                            type=ExceptionType.rider_offline,
                            occurred_at=now,
                            zone=r.zone,
                            rider_ids=[r.id],
                            order_ids=[o.id for o in orders if o.status not in ("delivered", "cancelled", "failed")],
                        )
                    ]
            wanted = ("confirmed", "picking") if kind == 1 else ("picked_up",)
            orders = list(session.exec(select(Order).where(Order.status.in_(wanted))))  # type: ignore[attr-defined]
            if not orders:
                return []
            o = self.rng.choice(orders)
            etype = ExceptionType.stockout_after_payment if kind == 1 else ExceptionType.stalled_in_transit
            return [
                ExceptionEvent(
                    id="x",
                    type=etype,
                    occurred_at=now,
                    zone=o.zone,
                    order_ids=[o.id],
                    store_ids=[o.store_id],
                    customer_ids=[o.customer_id],
                    rider_ids=[o.rider_id] if o.rider_id else [],
                )
            ]


def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    every_s: float = 4.0,
    seed: int | None = None,
    duration_s: float = 0.0,
    out: Any = None,
    directory: Path | None = None,
) -> int:
    import uvicorn

    from agent.api.app import create_app

    out = out or sys.stdout
    base: Settings = get_settings()
    seed = base.seed if seed is None else seed
    # the demo wipes its database at start: always its own file, never the configured DATABASE_URL
    url = fresh_database((directory or DEMO_DIR) / "demo.db")
    settings = base.model_copy(update={"database_url": url, "planner": "playbook", "autonomy_overrides": DEMO_AUTONOMY})
    engine = make_engine(url)
    init_db(engine)
    initial = seed_city(engine=engine, seed=seed)
    tokens = create_demo_tokens(engine=engine)
    app = create_app(settings, engine=engine)
    worker = app.state.worker

    base_url = f"http://{host}:{port}"
    out.write("\norderagent demo: a storm over the city, exceptions every few seconds\n\n")
    out.write(f"  console     {base_url}/console/signin\n")
    out.write(f"  supervisor  {base_url}/console/supervisor\n")
    out.write(f"  dispatcher  {base_url}/console/dispatcher\n")
    out.write(f"  API docs    {base_url}/docs\n\n  demo tokens (paste one into the sign-in page):\n")
    for role, secret in tokens.items():
        out.write(f"    {role:<12} {secret}\n")
    out.write(
        f"\n  database    {url}\n  autonomy    auto; assist for {', '.join(DEMO_AUTONOMY)}\n  Ctrl-C to stop.\n\n"
    )
    out.flush()

    city = DemoCity(
        engine=engine,
        submit=worker.submit,
        lock=worker.run_lock,
        settle=lambda: worker.drain(timeout_s=120),
        seed=seed,
        every_s=every_s,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))

    def start_city() -> None:
        while not server.started and not city.stop.is_set():
            time.sleep(0.1)
        city.run(initial)

    threading.Thread(target=start_city, name="demo-city", daemon=True).start()
    if duration_s > 0:
        threading.Timer(duration_s, lambda: setattr(server, "should_exit", True)).start()
    try:
        server.run()
    finally:
        city.stop.set()
    return 0

"""Small worlds built row by row for the agent's tests, and scripted planners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from agent.plan import Plan, PlanStep
from agent.planners.base import IncidentBrief, PlanContext, plan_confidence
from tools.db import session_scope
from tools.events import ExceptionEvent, ExceptionType
from tools.models import Customer, Order, OrderLine, Rider, Sku, Stock, Store, Tier, WorldInfo
from tools.state_machine import OrderStatus

EPOCH = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
NOW = EPOCH + timedelta(minutes=18 * 60)


def build_world(engine: Engine, *, n_orders: int = 4, note: str = "", promise_minutes: float = 30) -> list[str]:
    """One store in zone z1, three idle riders, ``n_orders`` confirmed orders of 2500 cents."""
    with session_scope(engine) as s:
        s.add(WorldInfo(name="test", source="test", seed=1, epoch=EPOCH, now=NOW))
        s.add(Store(id="s1", name="Store 1", x=0.0, y=0.0, zone="z1"))
        s.add(Store(id="s2", name="Store 2", x=800.0, y=0.0, zone="z1"))
        s.add(Sku(id="milk", name="Milk", category="dairy", price_cents=300))
        s.add(Sku(id="oatmilk", name="Oat milk", category="dairy", price_cents=320))
        s.flush()
        s.add(Stock(store_id="s1", sku_id="milk", on_hand=0))
        s.add(Stock(store_id="s1", sku_id="oatmilk", on_hand=10))
        for i in range(3):
            s.add(
                Rider(
                    id=f"r{i}",
                    name=f"Rider {i}",
                    x=100.0 * i,
                    y=50.0,
                    zone="z1",
                    shift_start=NOW - timedelta(hours=2),
                    shift_end=NOW + timedelta(hours=4),
                )
            )
        ids = []
        for i in range(n_orders):
            cid, oid = f"c{i}", f"o{i}"
            s.add(Customer(id=cid, name=f"Customer {i}", tier=Tier.bronze, x=1000.0, y=500.0 * i))
            s.flush()
            s.add(
                Order(
                    id=oid,
                    customer_id=cid,
                    store_id="s1",
                    x=1000.0,
                    y=500.0 * i,
                    zone="z1",
                    status=OrderStatus.confirmed,
                    value_cents=2500,
                    note=note if i == 0 else "",
                    placed_at=NOW - timedelta(minutes=10),
                    ready_at=NOW + timedelta(minutes=5),
                    promised_at=NOW + timedelta(minutes=promise_minutes),
                )
            )
            s.flush()
            s.add(OrderLine(order_id=oid, sku_id="milk", quantity=2, unit_price_cents=300))
            ids.append(oid)
    return ids


def event(eid: str, typ: ExceptionType, orders: list[str], **payload: Any) -> ExceptionEvent:
    return ExceptionEvent(id=eid, type=typ, occurred_at=NOW, zone="z1", order_ids=orders, payload=dict(payload))


def step(tool: str, args: dict[str, Any], confidence: float = 0.95, **kw: Any) -> PlanStep:
    return PlanStep(index=0, tool=tool, args=args, confidence=confidence, rationale="scripted", **kw)


class ScriptedPlanner:
    """Returns a fixed list of steps: lets a test choose exactly what the guardrails see."""

    name = "scripted"

    def __init__(self, steps: list[PlanStep]) -> None:
        self.steps = steps
        self.calls = 0

    def plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> Plan:
        self.calls += 1
        steps = [s.model_copy(update={"index": i}) for i, s in enumerate(self.steps)]
        return Plan(incident_id=incident.id, planner=self.name, steps=steps, confidence=plan_confidence(steps))

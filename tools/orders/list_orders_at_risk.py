"""Tool: active orders predicted to miss their promise, latest first."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Row, bindparam
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.models import Order, Store, aware
from tools.orders.eta import ACTIVE_NOW, predict_dropoffs
from tools.service import get_world
from tools.state_machine import order_status


class ListOrdersAtRiskArgs(ToolArgs):
    zone: str | None = Field(default=None, max_length=64, description="only orders of this zone")
    x: float | None = Field(default=None, ge=-1e7, le=1e7, description="centre of the area, metres")
    y: float | None = Field(default=None, ge=-1e7, le=1e7, description="centre of the area, metres")
    radius_m: float | None = Field(
        default=None, gt=0, le=100_000, description="orders whose store or drop-off lies within this radius"
    )
    horizon_minutes: int = Field(
        default=60, ge=1, le=720, description="only orders promised within this many minutes (or overdue)"
    )
    min_minutes_late: float = Field(default=0.0, ge=0, le=1440, description="ignore smaller predicted delays")
    limit: int = Field(default=100, ge=1, le=1000)

    @model_validator(mode="after")
    def _area_complete(self) -> ListOrdersAtRiskArgs:
        given = [v is not None for v in (self.x, self.y, self.radius_m)]
        if any(given) and not all(given):
            raise ValueError("x, y and radius_m go together")
        return self


class OrderAtRisk(BaseModel):
    order_id: str
    status: str
    zone: str
    store_id: str
    customer_id: str
    rider_id: str | None = Field(description="the order's rider, or None when it has none")
    predicted_rider_id: str | None = Field(description="the rider the prediction relies on")
    basis: str = Field(description="in_bag | assigned | next_rider | stranded | no_rider")
    value_cents: int
    promised_at: datetime
    predicted_dropoff_at: datetime
    minutes_late: float


class OrdersAtRisk(BaseModel):
    now: datetime
    total_at_risk: int = Field(description="how many matched before the limit")
    orders: list[OrderAtRisk]


_COLUMNS = tuple(
    col(c)
    for c in (
        Order.id,
        Order.status,
        Order.zone,
        Order.store_id,
        Order.customer_id,
        Order.rider_id,
        Order.value_cents,
        Order.x,
        Order.y,
    )
)

# the columns this tool reports, not ORM rows (a storm's zone has ~280 active orders); built once
_CANDIDATES = sa_select(*_COLUMNS).where(ACTIVE_NOW, col(Order.promised_at) <= bindparam("until"))
_ZONE_CANDIDATES = _CANDIDATES.where(col(Order.zone) == bindparam("zone"))


@tool(args=ListOrdersAtRiskArgs, result=OrdersAtRisk, writes=False, family="orders")
def list_orders_at_risk(ctx: ToolContext, args: ListOrdersAtRiskArgs) -> OrdersAtRisk | ToolError:
    """List active orders predicted to be delivered after their promised time, in a zone and/or within a
    radius of a point, promised within the horizon (overdue ones included), most late first. Each comes
    with its predicted drop-off, minutes late and the rider the prediction relies on."""
    s = ctx.session
    get_world(session=s)
    now = aware(ctx.now)
    until = now + timedelta(minutes=args.horizon_minutes)
    if args.zone:
        candidates = list(s.execute(_ZONE_CANDIDATES, {"now": now, "until": until, "zone": args.zone}))
    else:
        candidates = list(s.execute(_CANDIDATES, {"now": now, "until": until}))
    if args.radius_m is not None:
        assert args.x is not None and args.y is not None
        stores = {st.id: st for st in s.exec(select(Store))}

        def near(o: Row[Any]) -> bool:
            st = stores[o.store_id]
            return (
                math.hypot(o.x - args.x, o.y - args.y) <= args.radius_m  # type: ignore[operator,arg-type]
                or math.hypot(st.x - args.x, st.y - args.y) <= args.radius_m  # type: ignore[operator,arg-type]
            )

        candidates = [o for o in candidates if near(o)]
    by_id = {o.id: o for o in candidates}
    preds = predict_dropoffs(session=s, order_ids=list(by_id), now=now)
    late = sorted(
        (p for p in preds.values() if p.minutes_late > args.min_minutes_late),
        key=lambda p: (-p.minutes_late, p.order_id),
    )
    orders = []
    for p in late[: args.limit]:
        o = by_id[p.order_id]
        orders.append(
            {
                "order_id": p.order_id,
                "status": order_status(o.status).value,
                "zone": o.zone,
                "store_id": o.store_id,
                "customer_id": o.customer_id,
                "rider_id": o.rider_id,
                "predicted_rider_id": p.rider_id,
                "basis": p.basis,
                "value_cents": o.value_cents,
                "promised_at": p.promised_at,
                "predicted_dropoff_at": p.dropoff_at,
                "minutes_late": p.minutes_late,
            }
        )
    # one validation of the whole result: a storm lists ~260 orders, and an OrderAtRisk built per
    # order cost twice as much
    return OrdersAtRisk.model_validate({"now": now, "total_at_risk": len(late), "orders": orders})

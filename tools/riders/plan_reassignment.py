"""Tool: plan which rider should take which orders, with predicted times and an optimality check."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from tools.base import ToolContext, ToolError, tool
from tools.db import in_param
from tools.models import Order, WorldInfo, aware
from tools.riders.models import (
    PlannedAssignment,
    PlanReassignmentArgs,
    PlanReassignmentResult,
    UnassignedOrder,
)
from tools.riders.service import PLAN_ORDER_COLUMNS, PLANNABLE, PlanOrder, is_available, solver_input
from tools.riders.solver import solve_assignment
from tools.service import get_rider, get_world, list_orders, list_riders
from tools.state_machine import NotFound, OrderStatus, order_status


@tool(args=PlanReassignmentArgs, result=PlanReassignmentResult, writes=False, family="riders")
def plan_reassignment(ctx: ToolContext, args: PlanReassignmentArgs) -> PlanReassignmentResult | ToolError:
    """Plan riders for orders (order_ids, or every open order of a zone) so that as few minutes as
    possible are lost against each order's promise: same-store orders may be bundled on one rider,
    capacity and shift ends are respected, weather slowdown is applied. Candidate riders are rider_ids,
    or the riders on shift in the orders' zones. Returns per order the rider, predicted pickup and
    drop-off (time and minutes from now), lateness and on_time; orders left unassigned with the reason;
    the objective (late minutes + 1000 per unassigned order) with a proven lower bound and gap.
    Read-only: apply the plan with apply_reassignment."""
    session = ctx.session
    world = get_world(session=session)
    now = ctx.now
    orders: list[PlanOrder | Order] = []
    skipped: list[UnassignedOrder] = []
    if args.order_ids:
        wanted = list(dict.fromkeys(args.order_ids))
        loaded = _load_orders(session, wanted)
        missing = [oid for oid in wanted if oid not in loaded]
        if missing:
            return ToolError(error="not_found", message=f"unknown orders: {missing}", details={"order_ids": missing})
        for oid in wanted:
            o = loaded[oid]
            if order_status(o.status) in PLANNABLE and not o.on_hold:
                orders.append(o)
            else:
                why = "on_hold" if o.on_hold else "not_plannable"
                skipped.append(
                    UnassignedOrder(
                        order_id=oid, reason=why, detail=f"status {OrderStatus(o.status).value}, on_hold={o.on_hold}"
                    )
                )
    else:
        orders = [o for o in list_orders(session=session, statuses=PLANNABLE, zone=args.zone) if not o.on_hold]
    if args.rider_ids is not None:
        try:
            riders = [get_rider(session=session, rider_id=rid) for rid in dict.fromkeys(args.rider_ids)]
        except NotFound as exc:
            return ToolError(error="not_found", message=exc.message, details=dict(exc.details))
    else:
        zones = {o.zone for o in orders} if orders else {args.zone}
        riders = [r for r in list_riders(session=session) if not any(zones) or r.zone in zones]
    riders = [r for r in riders if is_available(r, now)]
    planned_ids = {o.id for o in orders}
    jobs, states, params = solver_input(session=session, orders=orders, riders=riders, now=now)
    factor = params.speed_factor
    sol = solve_assignment(
        jobs, states, params, rounds=1, exact=args.exact_time_limit_s > 0, exact_time_limit_s=args.exact_time_limit_s
    )
    by_id = {o.id: o for o in orders}
    out = [
        _planned(p.order_id, p.rider_id, by_id[p.order_id], list(p.bundle), p.pickup, p.dropoff, p.lateness, world, now)
        for p in sol.planned.values()
    ]
    out.sort(key=lambda a: (a.rider_id, a.dropoff_at, a.order_id))
    unassigned = skipped + [
        UnassignedOrder(order_id=u.order_id, reason=u.reason, detail=u.detail) for u in sol.unassigned
    ]
    assert planned_ids == {a.order_id for a in out} | {u.order_id for u in sol.unassigned}
    ex = sol.exact
    return PlanReassignmentResult(
        assignments=out,
        unassigned=unassigned,
        objective=round(sol.objective, 3),
        lateness_minutes=round(sol.lateness_minutes, 3),
        lower_bound=None if ex is None else round(ex.lower_bound, 3),
        gap_pct=None if ex is None else round(ex.gap_pct, 3),
        proven_optimal=None if ex is None else ex.proven_optimal,
        solve_ms=round(sol.solve_ms, 2),
        speed_factor=factor,
        riders_considered=len(states),
    )


_PLAN_ORDERS = sa_select(*PLAN_ORDER_COLUMNS).where(in_param(col(Order.id), "ids"))


def _load_orders(session: Session, ids: list[str]) -> dict[str, PlanOrder]:
    """The orders by id, the columns a plan reads, in one query (a storm asks ~240)."""
    rows = session.execute(_PLAN_ORDERS, {"ids": ids})
    return {row[0]: PlanOrder(*cast(tuple[Any, ...], tuple(row))) for row in rows}


def _planned(
    order_id: str,
    rider_id: str,
    order: PlanOrder | Order,
    bundle: list[str],
    pickup: float,
    dropoff: float,
    lateness: float,
    world: WorldInfo,
    now: datetime,
) -> PlannedAssignment:
    now_min = world.minute(now)
    return PlannedAssignment(
        order_id=order_id,
        rider_id=rider_id,
        current_rider_id=order.rider_id,
        bundle=bundle,
        pickup_at=world.at(pickup),
        dropoff_at=world.at(dropoff),
        promised_at=aware(order.promised_at),
        pickup_in_minutes=round(pickup - now_min, 2),
        dropoff_in_minutes=round(dropoff - now_min, 2),
        lateness_minutes=round(lateness, 2),
        on_time=lateness <= 0,
    )

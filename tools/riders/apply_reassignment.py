"""Tool: give orders to riders, through the order state machine, all or nothing."""

from __future__ import annotations

from collections import Counter

from tools.base import ToolContext, ToolError, tool
from tools.models import RiderStatus, aware
from tools.riders.models import AppliedAssignment, ApplyReassignmentArgs, ApplyReassignmentResult
from tools.riders.service import HELD, UNAVAILABLE, rider_loads
from tools.service import get_order, get_rider, transition_order
from tools.state_machine import Conflict, OrderStatus, check_transition


class RiderUnavailable(Conflict):
    code = "rider_unavailable"


class OverCapacity(Conflict):
    code = "over_capacity"


@tool(args=ApplyReassignmentArgs, result=ApplyReassignmentResult, writes=True, family="riders")
def apply_reassignment(ctx: ToolContext, args: ApplyReassignmentArgs) -> ApplyReassignmentResult | ToolError:
    """Assign orders to riders: assignments [{order_id, rider_id}], e.g. from plan_reassignment. Each
    rider must exist, be on shift (shift not ended, not offline) and stay within capacity counting the
    orders it already holds. Orders waiting for a rider become assigned; an assigned order changes
    rider; a picked-up order is handed over to the new rider. Either every assignment is applied or
    nothing changes (error codes: not_found, rider_unavailable, over_capacity, illegal_transition;
    conflict for an order on hold)."""
    session = ctx.session
    now = ctx.now
    ids = [a.order_id for a in args.assignments]
    dup = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dup:
        return ToolError(error="invalid_arguments", message=f"orders listed twice: {dup}", details={"order_ids": dup})
    orders = {a.order_id: get_order(session=session, order_id=a.order_id) for a in args.assignments}
    riders = {a.rider_id: get_rider(session=session, rider_id=a.rider_id) for a in args.assignments}
    for r in riders.values():
        if RiderStatus(r.status) in UNAVAILABLE or aware(r.shift_end) <= now:
            raise RiderUnavailable(
                f"rider {r.id} is {RiderStatus(r.status).value} (shift ends {aware(r.shift_end).isoformat()})",
                rider_id=r.id,
            )
    # check every order first: nothing is written unless all of it is allowed
    for a in args.assignments:
        check_transition(orders[a.order_id].status, OrderStatus.assigned, order_id=a.order_id)
        if orders[a.order_id].on_hold:  # held: not dispatched until the hold is lifted (hold_order)
            raise Conflict(f"order {a.order_id} is on hold: lift the hold before dispatching it", order_id=a.order_id)
    loads = Counter(rider_loads(session=session, rider_ids=list(riders)))
    for a in args.assignments:
        o = orders[a.order_id]
        if OrderStatus(o.status) in HELD and o.rider_id is not None and o.rider_id in loads:
            loads[o.rider_id] -= 1  # leaves its current rider (or stays, counted again below)
        loads[a.rider_id] += 1
    over = {rid: loads[rid] for rid, r in riders.items() if loads[rid] > r.capacity}
    if over:
        raise OverCapacity(
            "over capacity: " + ", ".join(f"{rid} would hold {n} > {riders[rid].capacity}" for rid, n in over.items()),
            riders=over,
        )
    applied: list[AppliedAssignment] = []
    previous: set[str] = set()
    for a in args.assignments:
        o = orders[a.order_id]
        before = OrderStatus(o.status)
        prev = o.rider_id
        transition_order(
            session=session,
            order=o,
            to=OrderStatus.assigned,
            at=now,
            actor=ctx.actor,
            detail={"rider_id": a.rider_id, "previous_rider_id": prev, "incident_id": ctx.incident_id},
        )
        o.rider_id = a.rider_id
        session.add(o)
        r = riders[a.rider_id]
        r.status = RiderStatus.busy
        session.add(r)
        if prev and prev != a.rider_id:
            previous.add(prev)
        applied.append(
            AppliedAssignment(
                order_id=o.id,
                rider_id=a.rider_id,
                previous_rider_id=prev,
                from_status=before.value,
                to_status=OrderStatus.assigned.value,
            )
        )
    session.flush()
    # a rider left with nothing to carry is idle again
    after = rider_loads(session=session, rider_ids=list(previous | set(riders)))
    for rid in previous - set(riders):
        pr = get_rider(session=session, rider_id=rid)
        if RiderStatus(pr.status) == RiderStatus.busy and after.get(rid, 0) == 0:
            pr.status = RiderStatus.idle
            session.add(pr)
    return ApplyReassignmentResult(applied=applied, rider_loads={rid: after.get(rid, 0) for rid in sorted(riders)})

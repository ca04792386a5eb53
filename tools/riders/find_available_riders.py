"""Tool: riders who can take work near a point or in a zone."""

from __future__ import annotations

import math

from tools.base import ToolContext, ToolError, tool
from tools.geo import distance, travel_minutes
from tools.models import Rider, RiderStatus, aware
from tools.riders.models import AvailableRider, FindAvailableRidersArgs, FindAvailableRidersResult
from tools.riders.service import is_available, rider_loads, speed_factor_at
from tools.service import get_world, list_riders


@tool(args=FindAvailableRidersArgs, result=FindAvailableRidersResult, writes=False, family="riders")
def find_available_riders(ctx: ToolContext, args: FindAvailableRidersArgs) -> FindAvailableRidersResult | ToolError:
    """Find riders on shift (idle, or busy finishing a route) near a point (x, y in metres, within
    radius_m) or in a zone. Each rider comes with status, orders held (load) and capacity, shift end,
    when its current route ends, distance to the point and ETA in minutes to reach it (weather
    slowdown applied). Sorted by ETA, nearest first. Read-only."""
    session = ctx.session
    world = get_world(session=session)
    now = ctx.now
    riders = [r for r in list_riders(session=session, zone=args.zone) if is_available(r, now)]
    if not args.include_busy:
        riders = [r for r in riders if RiderStatus(r.status) == RiderStatus.idle]
    loads = rider_loads(session=session, rider_ids=[r.id for r in riders])
    factor = speed_factor_at(
        session=session, now=now, points=[(args.x, args.y)] if args.x is not None and args.y is not None else []
    )
    out: list[AvailableRider] = []
    for r in riders:
        free_at = max(aware(r.free_at), now) if r.free_at is not None else now
        dist = eta = None
        if args.x is not None and args.y is not None:
            dist = distance(r.x, r.y, args.x, args.y)
            if dist > args.radius_m:
                continue
            wait = (free_at - now).total_seconds() / 60.0
            eta = round(wait + travel_minutes(dist, world.meters_per_minute, factor), 2)
        out.append(_row(r, loads.get(r.id, 0), free_at, dist, eta))
    out.sort(key=lambda a: (math.inf if a.eta_minutes is None else a.eta_minutes, a.rider_id))
    return FindAvailableRidersResult(riders=out[: args.limit], speed_factor=factor, considered=len(riders))


def _row(r: Rider, load: int, free_at, dist: float | None, eta: float | None) -> AvailableRider:  # type: ignore[no-untyped-def]
    return AvailableRider(
        rider_id=r.id,
        status=RiderStatus(r.status).value,
        zone=r.zone,
        load=load,
        capacity=r.capacity,
        free_at=free_at,
        shift_end=aware(r.shift_end),
        distance_m=None if dist is None else round(dist, 1),
        eta_minutes=eta,
    )

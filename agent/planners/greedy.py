"""The greedy baseline for evals: what a simple dispatcher rule does, without re-optimisation or model.

Rules, in order:
- every order that needs a rider (none yet, its rider stranded, or its rider among the incident's
  riders that went offline), most urgent promise first, goes to the NEAREST rider with room: the
  idle rider who gets that one order there soonest (``plan_reassignment`` asked about that single
  order and the riders with room, so travel time decides; no bundling, no look at the other orders,
  no revision of earlier choices);
- a bag already picked up by a rider who went offline goes to the nearest idle rider with room
  (the investigation lists them nearest first);
- every order still predicted late after that gets a flat coupon (no model, no customer value).
No notifications and no escalations. Confidences are the documented prior (no forecast of its own).
"""

from __future__ import annotations

from typing import Any

from agent.plan import ExpectedEffect, Plan, PlanStep
from agent.planners.base import IncidentBrief, PlanContext, plan_confidence, renumber

FLAT_COUPON_CENTS = 500
PRIOR_GREEDY = 0.9
CHUNK = 50  # orders per reassignment step (policy scope.max_orders_per_action)
CLOSED = frozenset({"delivered", "cancelled", "failed"})


def _late(order: dict[str, Any]) -> float:
    return float(order.get("minutes_late", order.get("predicted_minutes_late")) or 0.0)


class GreedyPlanner:
    name = "greedy"

    def plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> Plan:
        orders: dict[str, dict[str, Any]] = snapshot.get("orders", {})
        gone = set(incident.rider_ids) if incident.family == "rider_offline" else set()
        bags = set((snapshot.get("handover") or {}).get("order_ids", []))
        needing = sorted(
            (
                o
                for oid, o in orders.items()
                if oid not in bags
                and o.get("status") not in CLOSED
                and o.get("status") != "picked_up"
                and (not o.get("rider_id") or o.get("basis") == "stranded" or o.get("rider_id") in gone)
            ),
            key=lambda o: (str(o.get("promised_at", "")), o["order_id"]),
        )
        riders = self._riders(incident, snapshot, ctx) if needing else []
        spare = {r["rider_id"]: int(r.get("capacity", 0)) - int(r.get("load", 0)) for r in riders}
        lateness = {oid: _late(o) for oid, o in orders.items()}
        moves: list[dict[str, str]] = []
        for o in needing:
            free = sorted(rid for rid, n in spare.items() if n > 0)
            if not free:
                break
            res = ctx.read_tool(
                "plan_reassignment", {"order_ids": [o["order_id"]], "rider_ids": free, "exact_time_limit_s": 0}
            )
            got = [a for a in res.get("assignments", []) if a.get("rider_id") in spare] if res.get("ok", True) else []
            if not got:
                continue
            rid = got[0]["rider_id"]
            spare[rid] -= 1
            moves.append({"order_id": o["order_id"], "rider_id": rid})
            lateness[o["order_id"]] = float(got[0].get("lateness_minutes") or 0.0)
        # bags of an offline rider: nearest idle rider with room (the list is nearest first)
        hand = list((snapshot.get("handover") or {}).get("riders", []))
        room = {r["rider_id"]: int(r.get("capacity", 0)) - int(r.get("load", 0)) for r in hand}
        for oid in sorted(bags, key=lambda b: (str(orders.get(b, {}).get("promised_at", "")), b)):
            rid = next((r["rider_id"] for r in hand if room[r["rider_id"]] > 0), None)
            if rid is not None:
                room[rid] -= 1
                moves.append({"order_id": oid, "rider_id": rid})
        steps: list[PlanStep] = []
        for i in range(0, len(moves), CHUNK):
            steps.append(
                PlanStep(
                    index=0,
                    tool="apply_reassignment",
                    args={"assignments": moves[i : i + CHUNK]},
                    rationale="greedy: nearest rider with room, one order at a time",
                    confidence=PRIOR_GREEDY,
                )
            )
        for oid, o in orders.items():
            if o.get("status") not in CLOSED and lateness.get(oid, 0.0) > 0:
                steps.append(
                    PlanStep(
                        index=0,
                        tool="issue_compensation",
                        args={
                            "order_id": oid,
                            "kind": "coupon",
                            "amount_cents": FLAT_COUPON_CENTS,
                            "reason": "late delivery",
                        },
                        rationale="greedy: flat coupon for a late order",
                        expected_effect=ExpectedEffect(money_cents=FLAT_COUPON_CENTS),
                        confidence=PRIOR_GREEDY,
                    )
                )
        steps = renumber(steps)
        return Plan(
            incident_id=incident.id,
            planner=self.name,
            steps=steps,
            confidence=plan_confidence(steps),
            summary=f"greedy baseline: {len(moves)} assignments, flat coupons",
            model_name="greedy",
        )

    @staticmethod
    def _riders(incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> list[dict[str, Any]]:
        """Idle riders on shift in the zone (the investigation's list when it made one)."""
        if "riders" in snapshot:
            return [r for r in snapshot["riders"] if r.get("status") == "idle"]
        if not incident.zone:
            return []
        res = ctx.read_tool("find_available_riders", {"zone": incident.zone, "include_busy": False, "limit": 200})
        gone = set(incident.rider_ids)
        return [r for r in res.get("riders", []) if r.get("rider_id") not in gone] if res.get("ok", True) else []

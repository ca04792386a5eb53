"""The greedy baseline for evals: what a simple dispatcher rule does, without solver or model.

Orders needing a rider go, most urgent promise first, to the idle rider with the most spare
capacity (ties by id) until riders are full; every order still predicted late gets a flat coupon.
No notifications. Confidences are the documented priors (the baseline has no forecast of its own).
"""

from __future__ import annotations

from typing import Any

from agent.investigate import predicted_delays
from agent.plan import ExpectedEffect, Plan, PlanStep
from agent.planners.base import IncidentBrief, PlanContext, plan_confidence, renumber

FLAT_COUPON_CENTS = 500
PRIOR_GREEDY = 0.9


class GreedyPlanner:
    name = "greedy"

    def plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> Plan:
        steps: list[PlanStep] = []
        orders = snapshot.get("orders", {})
        needing = sorted(
            (o for o in orders.values() if not o.get("rider_id")),
            key=lambda o: (str(o.get("promised_at", "")), o["order_id"]),
        )
        spare = {
            r["rider_id"]: int(r.get("capacity", 0)) - int(r.get("load", 0))
            for r in snapshot.get("riders", [])
            if r.get("status") == "idle"
        }
        moves = []
        for o in needing:
            free = [rid for rid, n in spare.items() if n > 0]
            if not free:
                break
            rid = max(free, key=lambda r: (spare[r], r))
            spare[rid] -= 1
            moves.append({"order_id": o["order_id"], "rider_id": rid})
        for i in range(0, len(moves), 50):
            chunk = moves[i : i + 50]
            steps.append(
                PlanStep(
                    index=0,
                    tool="apply_reassignment",
                    args={"assignments": chunk},
                    rationale="greedy: first free rider",
                    confidence=PRIOR_GREEDY,
                )
            )
        delays = predicted_delays(snapshot)
        for oid in orders:
            if delays.get(oid, 0.0) > 0:
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

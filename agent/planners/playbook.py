"""The playbook planner: one documented, deterministic playbook per incident family. No network.

Playbooks (the snapshot comes from agent.investigate):
- delivery_delay (weather_slowdown / rider_shortage / order_late_risk, e.g. the storm):
  1. apply_reassignment of the solver's plan for the orders needing a rider (chunks of at most
     ``CHUNK`` orders, so one step never touches more than the policy's per-action scope);
  2. issue_compensation per order still predicted late, kind and amount from the compensation model
     (its SHAP explanation attached to the step);
  3. notify_customer (template "delay") for every affected customer.
- rider_offline: reassign the orders the rider had in hand: the assigned ones as the solver plans
  them; the bags already picked up (which the solver does not plan) are handed over to the idle
  riders nearest the rider's last position, within capacity; orders nobody can take are escalated
  to the fleet team and their customers told. Compensate and notify those still late.
- stockout_after_payment (then, for orders still waiting for a rider, apply_reassignment):
  per short line, substitute_item with the closest-priced substitute in
  stock; else transfer_stock from the nearest store holding it; else a partial refund of the line
  (issue_compensation kind=refund, which needs approval by policy): the customer gets an apology at
  once, and the "refund" notice (with the amount) only runs after the refund executed (step.after).
- stalled_in_transit: notify (delay), compensate per the model, expedite_order.
- prep_delay: reassign the late orders when the solver has a better rider, notify the rest.
- address_change: notify (address_confirm) with the re-validated ETA; reassign when now late.
- customer_complaint: quote, then propose the model's compensation (a refund needs approval by
  policy) and a generic apology. The customer's text is never read here: what the note asks for has
  no effect on the plan.
Joined events of another family (IncidentBrief.also: a rider gone, or a shelf short, for an order of
an incident of another family) get their family's playbook too, after the incident's own, without a
second write of the same step or a second compensation or notice for an order (``merge_joined``).
Confidences: see agent.planners.base (solver forecast share, model prior, fixed priors; plan = min).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from agent.investigate import predicted_delays
from agent.plan import Plan, PlanStep, args_hash
from agent.planners.base import (
    PRIOR_COMPENSATION,
    PRIOR_ESCALATE,
    PRIOR_EXPEDITE,
    PRIOR_HANDOVER,
    PRIOR_NOTIFY,
    PRIOR_REFUND,
    PRIOR_SUBSTITUTE,
    PRIOR_TRANSFER,
    IncidentBrief,
    PlanContext,
    plan_confidence,
    renumber,
)

CHUNK = 50  # orders per reassignment step (policy scope.max_orders_per_action)
IMPROVED_MINUTES = 5.0  # a move that saves this much counts as a success even if still late
WRITE_TOOLS_HINT = frozenset(
    {
        "apply_reassignment",
        "issue_compensation",
        "notify_customer",
        "substitute_item",
        "transfer_stock",
        "expedite_order",
        "hold_order",
        "cancel_order",
        "escalate_incident",
        "reserve_stock",
        "release_stock",
    }
)


class PlaybookPlanner:
    name = "playbook"

    def plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> Plan:
        fam = incident.family
        builder = PLAYBOOKS.get(fam, _notify_only)
        # a follow-up with no new order of its own plans only its joined events (``also``)
        steps = [] if incident.follow_up and not incident.order_ids else builder(incident, snapshot)
        playbooks = [fam]
        for sub in incident.also:  # joined events of a family this playbook does not cover
            part = (snapshot.get("also") or {}).get(sub.family)
            sub_builder = PLAYBOOKS.get(sub.family)
            if part is not None and sub_builder is not None:
                steps = merge_joined(steps, sub_builder(sub, part))
                playbooks.append(sub.family)
        steps = renumber(steps)
        writes = dict(ctx.tool_names) or dict.fromkeys(WRITE_TOOLS_HINT, True)
        return Plan(
            incident_id=incident.id,
            planner=self.name,
            playbook="+".join(playbooks),
            steps=steps,
            confidence=plan_confidence(steps, writes),
            summary=_summary(fam, steps),
            model_provider="orderagent",
            model_name="playbook",
            model_version=str(snapshot.get("quote_model_version", "")),
        )


def _summary(fam: str, steps: list[PlanStep]) -> str:
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.tool] = counts.get(s.tool, 0) + 1
    return f"{fam}: " + (", ".join(f"{n} x {t}" for t, n in counts.items()) or "nothing to do")


# --- building blocks -------------------------------------------------------------------------------

# one of these per order in a plan: a joined family's plan does not pay or tell a customer twice
ONCE_PER_ORDER = frozenset({"issue_compensation", "notify_customer"})


def merge_joined(steps: list[PlanStep], extra: list[PlanStep]) -> list[PlanStep]:
    """``extra`` (the plan of a joined family, see IncidentBrief.also) after ``steps``, without what
    ``steps`` does already: the same write, or a compensation or notice for an order that has one. A
    step that follows (``after``) a left-out step is left out too; the others' ``after`` follow them
    to their new positions."""
    have = {args_hash(s.tool, s.args) for s in steps}
    per_order = {(s.tool, s.args.get("order_id")) for s in steps if s.tool in ONCE_PER_ORDER}
    out = list(steps)
    moved: dict[int, int] = {}
    for i, st in enumerate(extra):
        if st.after is not None and st.after not in moved:
            continue
        once = (st.tool, st.args.get("order_id"))
        if args_hash(st.tool, st.args) in have or (st.tool in ONCE_PER_ORDER and once in per_order):
            continue
        moved[i] = len(out)
        out.append(st.model_copy(update={"after": moved[st.after] if st.after is not None else None}))
        have.add(args_hash(st.tool, st.args))
        if st.tool in ONCE_PER_ORDER:
            per_order.add(once)
    return out


def _step_data(tool: str, args: dict[str, Any], rationale: str, confidence: float, **effect: Any) -> dict[str, Any]:
    """A step's fields as ``PlanStep`` takes them (validated by ``_step`` or, for a list, ``_steps``)."""
    explanation = effect.pop("explanation", None)
    cont = effect.pop("continue_on_failure", True)
    return {
        "index": 0,
        "tool": tool,
        "args": args,
        "rationale": rationale,
        "expected_effect": effect,
        "confidence": round(max(0.0, min(1.0, confidence)), 4),
        "continue_on_failure": cont,
        "explanation": explanation,
    }


# a storm's ~400 compensation and notice steps in one validation call each, not a model per step
_STEPS = TypeAdapter(list[PlanStep])


def _steps(data: list[dict[str, Any]]) -> list[PlanStep]:
    return _STEPS.validate_python(data)


def _step(tool: str, args: dict[str, Any], rationale: str, confidence: float, **effect: Any) -> PlanStep:
    return PlanStep.model_validate(_step_data(tool, args, rationale, confidence, **effect))


def reassignment_steps(snapshot: dict[str, Any]) -> list[PlanStep]:
    """apply_reassignment of the solver's plan, in chunks; confidence = the share of the chunk's
    orders the solver predicts on time, or at least IMPROVED_MINUTES earlier than now forecast."""
    plan = snapshot.get("reassignment") or {}
    # a "move" to the rider the order already has changes nothing: not proposed
    moves = [a for a in plan.get("assignments", []) if a.get("rider_id") and a["rider_id"] != a.get("current_rider_id")]
    # one rider's orders stay in one step, so each step's capacity check sees the rider's whole change
    moves.sort(key=lambda a: (a["rider_id"], a["order_id"]))
    if not moves:
        return []
    before = {
        oid: float(o.get("minutes_late", o.get("predicted_minutes_late")) or 0.0)
        for oid, o in snapshot.get("orders", {}).items()
    }
    steps = []
    for i in range(0, len(moves), CHUNK):
        chunk = moves[i : i + CHUNK]
        good = 0
        on_time = 0
        for a in chunk:
            after = float(a.get("lateness_minutes") or 0.0)
            on_time += after <= 0.0
            good += after <= 0.0 or after <= before.get(a["order_id"], after) - IMPROVED_MINUTES
        steps.append(
            _step(
                "apply_reassignment",
                {"assignments": [{"order_id": a["order_id"], "rider_id": a["rider_id"]} for a in chunk]},
                f"solver re-plan: {on_time}/{len(chunk)} orders predicted on time after the move",
                good / len(chunk),
                orders_on_time=on_time,
            )
        )
    return steps


def compensation_steps(snapshot: dict[str, Any], order_ids: list[str] | None = None) -> list[PlanStep]:
    """issue_compensation per quoted order, amount and kind from the model, SHAP attached."""
    quotes = snapshot.get("quotes", {})
    ids = order_ids if order_ids is not None else list(quotes)
    steps = []
    for oid in ids:
        q = quotes.get(oid)
        if not q or q.get("kind") == "none" or int(q.get("amount_cents", 0)) <= 0:
            continue
        # confidence: the model's reported fit quality when it gives one, else the documented prior
        conf = float(q.get("fit_r2", PRIOR_COMPENSATION))
        steps.append(
            _step_data(
                "issue_compensation",
                {
                    "order_id": oid,
                    "kind": q["kind"],
                    "amount_cents": int(q["amount_cents"]),
                    "reason": "delivery predicted late",
                },
                f"model {q.get('model_version', '')}: {q['kind']} of {q['amount_cents']} cents",
                conf,
                money_cents=int(q["amount_cents"]),
                explanation=q.get("explanation"),
            )
        )
    return _steps(steps)


def notify_steps(order_ids: list[str], template: str, why: str) -> list[PlanStep]:
    return _steps(
        [
            _step_data(
                "notify_customer", {"order_id": oid, "template": template}, why, PRIOR_NOTIFY, customers_notified=1
            )
            for oid in order_ids
        ]
    )


def _late_after_plan(snapshot: dict[str, Any]) -> list[str]:
    delays = predicted_delays(snapshot)
    return [oid for oid in snapshot.get("orders", {}) if delays.get(oid, 0.0) > 0.0]


# --- playbooks -------------------------------------------------------------------------------------


def _delivery_delay(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    steps = reassignment_steps(snapshot)
    steps += compensation_steps(snapshot)
    late = _late_after_plan(snapshot)
    steps += notify_steps(late, "delay", "tell the customer the new ETA before they have to ask")
    return steps


def handover_steps(snapshot: dict[str, Any]) -> tuple[list[PlanStep], list[str]]:
    """Bags a rider who went offline had picked up go to the nearest idle riders with room (most
    urgent promise first); returns the step and the bags nobody can take."""
    hand = snapshot.get("handover") or {}
    orders = snapshot.get("orders", {})
    bags = sorted(hand.get("order_ids", []), key=lambda o: (str(orders.get(o, {}).get("promised_at", "")), o))
    riders = list(hand.get("riders", []))  # nearest first
    room = {r["rider_id"]: int(r.get("capacity", 0)) - int(r.get("load", 0)) for r in riders}
    moves: list[dict[str, str]] = []
    stuck: list[str] = []
    for oid in bags:
        rid = next((r["rider_id"] for r in riders if room[r["rider_id"]] > 0), None)
        if rid is None:
            stuck.append(oid)
            continue
        room[rid] -= 1
        moves.append({"order_id": oid, "rider_id": rid})
    steps = []
    for i in range(0, len(moves), CHUNK):
        chunk = moves[i : i + CHUNK]
        steps.append(
            _step(
                "apply_reassignment",
                {"assignments": chunk},
                f"hand over {len(chunk)} picked-up bag(s) to the nearest idle rider(s) with room",
                PRIOR_HANDOVER,
            )
        )
    return steps, stuck


def _rider_offline(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    steps = reassignment_steps(snapshot)
    handover, stuck = handover_steps(snapshot)
    steps += handover
    # assigned orders the solver could not place (no rider with room on shift) are stuck as well
    unplaced = (snapshot.get("reassignment") or {}).get("unassigned", [])
    stuck += [u["order_id"] for u in unplaced if u.get("reason") != "not_plannable" and u["order_id"] not in stuck]
    if snapshot.get("reassignment_error"):
        planned = {a["order_id"] for a in (snapshot.get("reassignment") or {}).get("assignments", [])}
        bags = set((snapshot.get("handover") or {}).get("order_ids", []))
        active = [o for o, v in snapshot.get("orders", {}).items() if v.get("status") == "assigned"]
        stuck += [o for o in active if o not in planned and o not in bags and o not in stuck]
    if stuck:
        steps.append(
            _step(
                "escalate_incident",
                {
                    "reason": f"rider offline: no rider can take {len(stuck)} order(s); dispatch them by hand",
                    "team": "fleet",
                    "order_ids": stuck,
                },
                "no rider on shift has room for these orders",
                PRIOR_ESCALATE,
            )
        )
    steps += compensation_steps(snapshot)
    late = _late_after_plan(snapshot)
    steps += notify_steps([o for o in late if o not in stuck], "delay", "their rider went offline: new ETA")
    steps += notify_steps(stuck, "generic_apology", "their rider went offline and nobody can take over yet")
    return steps


def _stockout(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    steps: list[PlanStep] = []
    for opt in snapshot.get("stock_options", []):
        oid, line = opt["order_id"], opt["line"]
        subs = [s for s in opt.get("substitutes", []) if int(s.get("available", 0)) >= int(line["quantity"])]
        near = [n for n in opt.get("nearby", []) if int(n.get("available", 0)) >= int(line["quantity"])]
        if subs:
            best = subs[0]  # closest price first
            steps.append(
                _step(
                    "substitute_item",
                    {"order_id": oid, "line_id": line["line_id"], "substitute_sku_id": best["sku_id"]},
                    f"{best.get('name', best['sku_id'])} in stock, price difference "
                    f"{best.get('price_difference_cents', 0)} cents (customer never pays more)",
                    PRIOR_SUBSTITUTE,
                    continue_on_failure=False,
                )
            )
            steps += notify_steps([oid], "substitution", "tell the customer what was replaced")
        elif near:
            src = near[0]  # nearest first
            steps.append(
                _step(
                    "transfer_stock",
                    {
                        "order_id": oid,
                        "from_store_id": src["store_id"],
                        "sku_id": line["sku_id"],
                        "quantity": int(line["quantity"]),
                    },
                    f"nearest stock at {src['store_id']}, {src.get('transfer_minutes', '?')} minutes away",
                    PRIOR_TRANSFER,
                    continue_on_failure=False,
                )
            )
            steps += notify_steps([oid], "delay", "the missing item comes from another store: new ETA")
        else:
            amount = int(line.get("unit_price_cents", 0)) * int(line["quantity"])
            if amount > 0:
                # the customer hears at once (the refund may wait for a supervisor) ...
                steps += notify_steps([oid], "generic_apology", "an item is missing: tell the customer now")
                refund_at = len(steps)  # this builder's list is the plan: positions are the indexes
                steps.append(
                    _step(
                        "issue_compensation",
                        {
                            "order_id": oid,
                            "kind": "refund",
                            "amount_cents": amount,
                            "reason": f"item {line['sku_id']} out of stock after payment",
                        },
                        "no substitute and no nearby stock: refund the missing line",
                        PRIOR_REFUND,
                        money_cents=amount,
                        continue_on_failure=False,
                    )
                )
                # ... and is told about the refund only once it has actually been paid
                notice = _step(
                    "notify_customer",
                    {"order_id": oid, "template": "refund", "amount_cents": amount},
                    "tell the customer about the refund once it executed",
                    PRIOR_NOTIFY,
                    customers_notified=1,
                )
                steps.append(notice.model_copy(update={"after": refund_at}))
    # orders still waiting for a rider get one now (after the stock fix, so a failed fix stops first)
    return steps + reassignment_steps(snapshot)


def _stalled(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    ids = list(snapshot.get("orders", {}))
    steps = notify_steps(ids, "delay", "the order has not moved: apologise with the new ETA")
    steps += compensation_steps(snapshot, ids)
    steps += [
        _step(
            "expedite_order",
            {"order_id": oid, "priority": 2, "reason": "stalled in transit"},
            "raise priority so dispatch acts on it first",
            PRIOR_EXPEDITE,
        )
        for oid in ids
    ]
    return steps


def _prep_delay(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    steps = reassignment_steps(snapshot)
    steps += notify_steps(_late_after_plan(snapshot), "delay", "the store is slow: new ETA")
    return steps


def _address_change(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    ids = list(snapshot.get("orders", {}))
    steps = notify_steps(ids, "address_confirm", "confirm the new address with the re-validated ETA")
    steps += reassignment_steps(snapshot)
    return steps


def _complaint(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    ids = list(snapshot.get("orders", {}))
    steps = compensation_steps(snapshot, ids)
    steps += notify_steps(ids, "generic_apology", "acknowledge the complaint")
    return steps


def _notify_only(incident: IncidentBrief, snapshot: dict[str, Any]) -> list[PlanStep]:
    return notify_steps(list(snapshot.get("orders", {})), "generic_apology", "unknown family: inform only")


PLAYBOOKS = {
    "delivery_delay": _delivery_delay,
    "rider_offline": _rider_offline,
    "stockout_after_payment": _stockout,
    "stalled_in_transit": _stalled,
    "prep_delay": _prep_delay,
    "address_change": _address_change,
    "customer_complaint": _complaint,
}

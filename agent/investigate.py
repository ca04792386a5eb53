"""The investigation node's work: READ-tool calls per incident family, gathered into a snapshot.

The snapshot is the input every planner plans from and what the audit stores (by sha256) as the facts
a decision was taken on. Only read tools are called here, and in batches where the tool takes a list
(the storm's ~280 orders are one list_orders_at_risk, one plan_reassignment, one quote_compensation).
Customer free text (order notes, complaint text) is collected under ``customer_texts`` so the LLM
planner can pass it as delimited data; the playbook planner never reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.models import Incident
from agent.planners.base import IncidentBrief

Call = Callable[[str, dict[str, Any]], dict[str, Any]]

# how far ahead a storm looks for orders at risk (their promise within this horizon, or overdue)
RISK_HORIZON_MINUTES = 180
# families whose investigation may add orders found at risk in the same zone to the incident
ZONE_FAMILIES = frozenset({"delivery_delay"})
# a delivery this many minutes late or more gets compensation quoted
LATE_MINUTES = 1.0


def investigate(incident: IncidentBrief, call: Call, *, now: datetime) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "incident": {"id": incident.id, "type": incident.type, "family": incident.family, "zone": incident.zone},
        "now": now.isoformat(),
        "calls": [],
        "customer_texts": {},
    }

    def traced(name: str, args: dict[str, Any]) -> dict[str, Any]:
        out = call(name, args)
        snap["calls"].append({"tool": name, "ok": bool(out.get("ok", True)), "error": out.get("error")})
        return out

    fam = incident.family
    if incident.follow_up and not incident.order_ids:
        fam = ""  # a follow-up for joined events of another family only (``also``): nothing else to read
    if fam == "delivery_delay":
        _delivery_delay(incident, traced, snap)
    elif fam == "rider_offline":
        _orders(incident.order_ids, traced, snap)
        # bags already picked up are not the solver's to plan (not_plannable): _handover covers them
        in_hand = [o for o in _active(snap) if snap["orders"][o].get("status") != "picked_up"]
        _reassignment(in_hand, traced, snap)
        _handover(incident, traced, snap)
        _quotes(snap, traced)
    elif fam == "stockout_after_payment":
        _orders(incident.order_ids, traced, snap)
        _stock_options(traced, snap)
        # an order still waiting for a rider is dispatched too: fixing the shelf alone leaves it late
        waiting = [
            oid
            for oid, o in snap.get("orders", {}).items()
            if not o.get("rider_id") and o.get("status") in ("confirmed", "picking", "ready")
        ]
        _reassignment(waiting, traced, snap)
    elif fam in ("stalled_in_transit", "customer_complaint", "address_change", "prep_delay"):
        ids = incident.order_ids or _store_orders(incident, traced)
        _orders(ids, traced, snap)
        if fam in ("address_change", "prep_delay"):
            late = [o["order_id"] for o in snap["orders"].values() if (o.get("predicted_minutes_late") or 0) > 0]
            _reassignment([o for o in late if snap["orders"][o].get("status") not in ("picked_up",)], traced, snap)
        _quotes(snap, traced)
    for sub in incident.also:
        # its own family's reads, on its own orders; what customers wrote joins the main snapshot's
        part = investigate(sub, call, now=now)
        snap["customer_texts"].update(part.pop("customer_texts", {}))
        snap.setdefault("also", {})[sub.family] = part
    for payload in incident.payloads:
        for key in ("text", "message", "complaint", "note"):
            if isinstance(payload.get(key), str) and payload[key]:
                snap["customer_texts"][f"event {payload.get('event_id', '?')}"] = payload[key]
    return snap


def expand_scope(incident: Incident, snapshot: dict[str, Any]) -> list[str]:
    """The incident's orders plus, for zone-wide families, those the investigation found at risk."""
    scope = list(incident.order_ids)
    if incident.family in ZONE_FAMILIES:
        seen = set(scope)
        for oid in snapshot.get("at_risk", {}):
            if oid not in seen:
                scope.append(oid)
                seen.add(oid)
    return scope


def _delivery_delay(incident: IncidentBrief, call: Call, snap: dict[str, Any]) -> None:
    args: dict[str, Any] = {"horizon_minutes": RISK_HORIZON_MINUTES, "limit": 1000}
    if incident.zone:
        args["zone"] = incident.zone
    res = call("list_orders_at_risk", args)
    at_risk = {o["order_id"]: o for o in res.get("orders", [])} if res.get("ok", True) else {}
    if incident.follow_up:  # earlier plans covered the zone; only the late events' orders are new
        mine = set(incident.order_ids)
        at_risk = {oid: o for oid, o in at_risk.items() if oid in mine}
    # event orders that the forecast no longer sees as late stay in the snapshot as not at risk
    snap["at_risk"] = at_risk
    snap["orders"] = dict(at_risk)
    # the orders needing a rider: none yet, or one that is no longer coming (stranded)
    needing = [o["order_id"] for o in at_risk.values() if not o.get("rider_id") or o.get("basis") == "stranded"]
    _reassignment(needing, call, snap)
    riders = call("find_available_riders", {"zone": incident.zone or None, "include_busy": False, "limit": 200})
    snap["riders"] = riders.get("riders", []) if riders.get("ok", True) else []
    _quotes(snap, call)


def _store_orders(incident: IncidentBrief, call: Call) -> list[str]:
    if not incident.store_ids:
        return []
    res = call("list_orders_at_risk", {"zone": incident.zone or None, "horizon_minutes": 240, "limit": 1000})
    stores = set(incident.store_ids)
    return [o["order_id"] for o in res.get("orders", []) if o.get("store_id") in stores]


def _orders(order_ids: list[str], call: Call, snap: dict[str, Any]) -> None:
    orders = snap.setdefault("orders", {})
    for oid in order_ids:
        view = call("get_order", {"order_id": oid})
        if view.get("ok", True) is False:
            continue
        note = view.pop("customer_note", "") or ""
        if note:
            snap["customer_texts"][f"order {oid}"] = note
        orders[oid] = view


def _active(snap: dict[str, Any]) -> list[str]:
    closed = {"delivered", "cancelled", "failed"}
    return [oid for oid, o in snap.get("orders", {}).items() if o.get("status") not in closed]


def _reassignment(order_ids: list[str], call: Call, snap: dict[str, Any]) -> None:
    if not order_ids:
        return
    # exact_time_limit_s=0: the heuristic's plan without the MILP bound (the hot path stays fast)
    res = call("plan_reassignment", {"order_ids": order_ids[:500], "exact_time_limit_s": 0})
    if res.get("ok", True) is False:
        snap["reassignment_error"] = {"error": res.get("error"), "message": res.get("message")}
        return
    snap["reassignment"] = res


def _handover(incident: IncidentBrief, call: Call, snap: dict[str, Any]) -> None:
    """Bags already picked up by a rider who went offline: the solver does not plan them
    (not_plannable), so list the idle riders nearest the rider's last known position (from the
    event, when it gives one) who could take the bag over."""
    gone = set(incident.rider_ids)
    bags = [
        oid for oid, o in snap.get("orders", {}).items() if o.get("status") == "picked_up" and o.get("rider_id") in gone
    ]
    if not bags:
        return
    args: dict[str, Any] = {"include_busy": False, "limit": 50}
    where = next((p for p in incident.payloads if "x" in p and "y" in p), None)
    if where is not None:
        args.update(x=float(where["x"]), y=float(where["y"]), radius_m=20_000.0)
    if incident.zone:
        args["zone"] = incident.zone
    if "x" not in args and "zone" not in args:
        snap["handover"] = {"order_ids": bags, "riders": []}
        return
    res = call("find_available_riders", args)
    riders = res.get("riders", []) if res.get("ok", True) else []
    snap["handover"] = {"order_ids": bags, "riders": [r for r in riders if r.get("rider_id") not in gone]}


def predicted_delays(snap: dict[str, Any]) -> dict[str, float]:
    """Minutes late per order after the proposed reassignment (or as forecast when none is planned)."""
    delays: dict[str, float] = {}
    for oid, o in snap.get("orders", {}).items():
        late = o.get("minutes_late", o.get("predicted_minutes_late"))
        if late is not None:
            delays[oid] = float(late)
    for a in (snap.get("reassignment") or {}).get("assignments", []):
        if a.get("lateness_minutes") is not None:
            delays[a["order_id"]] = float(a["lateness_minutes"])
    return delays


def _quotes(snap: dict[str, Any], call: Call) -> None:
    delays = predicted_delays(snap)
    late = [oid for oid in _active(snap) if delays.get(oid, 0.0) >= LATE_MINUTES]
    if not late:
        return
    res = call(
        "quote_compensation",
        {"order_ids": late[:1000], "predicted_delay_minutes": {oid: delays[oid] for oid in late[:1000]}},
    )
    if res.get("ok", True) is False:
        snap["quote_error"] = {"error": res.get("error"), "message": res.get("message")}
        return
    snap["quotes"] = {q["order_id"]: _slim_quote(q) for q in res.get("quotes", [])}
    snap["quote_model_version"] = res.get("model_version", "")


def _slim_quote(q: dict[str, Any]) -> dict[str, Any]:
    # keep the SHAP explanation, drop the raw feature vector (large and in the model's own audit)
    return {k: v for k, v in q.items() if k != "features"}


def _stock_options(call: Call, snap: dict[str, Any]) -> None:
    options: list[dict[str, Any]] = []
    for oid, o in snap.get("orders", {}).items():
        for line in o.get("lines", []):
            if line.get("status") != "short":
                continue
            base = {"store_id": o["store_id"], "sku_id": line["sku_id"], "quantity": line["quantity"]}
            subs = call("find_substitutes", base)
            near = call("find_nearby_stock", base)
            options.append(
                {
                    "order_id": oid,
                    "line": line,
                    "substitutes": subs.get("substitutes", []) if subs.get("ok", True) else [],
                    "nearby": near.get("stores", []) if near.get("ok", True) else [],
                }
            )
    snap["stock_options"] = options

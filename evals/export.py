"""A recorded incident becomes a regression case: ``orderagent eval export --incident ID``.

The case rebuilds the incident's world from its source (the preset and seed, or the MDRP day and the
minute the incident opened), replays the events exactly as they were received, answers approvals as
the supervisors did, and expects what happened then: the steps that executed must execute again,
the steps supervisors rejected or let expire must not, the steps that went to approval must again,
and no order may be paid more than it was.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from evals.case import IncidentCase
from tools.db import get_engine
from tools.service import get_world

KEY_ARGS = ("order_id", "kind", "rider_id", "store_id", "sku_id")


def _key_args(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args[k] for k in KEY_ARGS if k in args and isinstance(args[k], str | int)}


def _patterns(tool: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Step patterns that pick out this step: its key arguments, and for a step acting on a list of
    orders (a reassignment's assignments) one pattern per order, so that an approved and a rejected
    reassignment of different orders do not collapse into one pattern that contradicts itself."""
    from evals.replay import order_ids_of

    base = _key_args(args)
    listed = [o for o in order_ids_of(args) if o != args.get("order_id")]
    if not listed:
        return [{"tool": tool, "args": base}]
    return [{"tool": tool, "args": {**base, "order_ids": {"contains": o}}} for o in dict.fromkeys(listed)]


def export_incident(*, incident_id: str, database_url: str | None = None) -> dict[str, Any]:
    from agent.models import ExecutedStep, ExecutionStatus, Incident, IncidentEvent
    from guardrails.models import ApprovalRequest, ApprovalStep
    from tools.models import Compensation, Rider, RiderStatus

    engine = get_engine(database_url)
    with Session(engine) as s:
        inc = s.get(Incident, incident_id)
        if inc is None:
            raise LookupError(f"no incident {incident_id!r}")
        world = get_world(session=s)
        kind, _, name = world.source.partition(":")
        if kind == "preset":
            world_spec: dict[str, Any] = {"preset": name, "seed": world.seed}
        elif kind == "mdrp":
            world_spec = {"mdrp": name, "seed": world.seed, "minute": int(world.minute(inc.opened_at))}
        else:
            raise ValueError(f"cannot rebuild a world from source {world.source!r}")
        events = [
            {"event": ev.event}
            for ev in s.exec(
                select(IncidentEvent)
                .where(IncidentEvent.incident_id == inc.id)
                .order_by(col(IncidentEvent.received_at), col(IncidentEvent.seq))
            )
            if ev.event
        ]
        setup = [
            {"op": "set", "entity": "rider", "id": r.id, "fields": {"status": "offline"}}
            for r in s.exec(select(Rider).where(col(Rider.id).in_(inc.rider_ids or [""])))
            if r.status == RiderStatus.offline
        ]
        setup += _subject_state(s, inc)
        plan_steps = {int(st["index"]): st for st in (inc.plan or {}).get("steps", [])}
        executed = {
            e.step_index
            for e in s.exec(select(ExecutedStep).where(ExecutedStep.incident_id == inc.id))
            if e.status == ExecutionStatus.succeeded
        }
        rules, must_approve, must_not = [], [], []
        tier = 0  # the highest approval tier the incident reached: what the replay is held to
        for req in s.exec(select(ApprovalRequest).where(ApprovalRequest.incident_id == inc.id)):
            for st in s.exec(select(ApprovalStep).where(ApprovalStep.request_id == req.id)):
                tier = max(tier, st.approvals_required)
                patterns = _patterns(st.tool, st.original_args or st.args)
                match = patterns[0]  # enough to tell this step's request apart for the approver
                status = str(st.status)
                action = {"approved": "edit" if st.edited else "approve", "rejected": "reject"}.get(status, "expire")
                rule: dict[str, Any] = {"match": match, "action": action, "reason": "as recorded"}
                if action == "edit":
                    rule["args"] = dict(st.args)
                rules.append(rule)
                must_approve.extend(patterns)
                if action in ("reject", "expire"):
                    must_not.extend(patterns)
        must_execute = [
            pattern
            for i in sorted(executed)
            if i in plan_steps
            for pattern in _patterns(plan_steps[i]["tool"], plan_steps[i]["args"])
        ]
        paid = [
            c.amount_cents
            for c in s.exec(select(Compensation).where(col(Compensation.order_id).in_(inc.order_ids or [""])))
        ]
    case = {
        "schema_version": 1,
        "id": f"exported-{incident_id.lower()}"[:80],
        "title": f"Regression: incident {incident_id} ({inc.type}) as handled on {inc.opened_at:%Y-%m-%d}",
        "suites": ["exported"],
        "tags": ["exported", inc.type],
        "policy_tier": tier,
        "world": world_spec,
        "setup": setup,
        "events": events,
        "autonomy": inc.autonomy or "auto",
        "approver": {"default": "approve", "rules": rules},
        "expect": {
            "must_execute": _dedupe(must_execute),
            "must_not_execute": _dedupe(must_not),
            "must_request_approval": _dedupe(must_approve),
            "compensation": {"max_per_order_cents": max(paid)} if paid else None,
            "incidents": 1,
        },
    }
    IncidentCase.model_validate(case)  # the export is a valid case or an error here, not at replay
    return case


# order fields an exception changes (injectors and order systems); statuses and riders are left to replay
ORDER_FIELDS = ("x", "y", "ready_at", "promised_at", "picked_up_at", "note")


def _subject_state(s: Session, inc: Any) -> list[dict[str, Any]]:
    """Set-up operations that put the incident's orders and their stock back as they stand now.

    The world is rebuilt from its source, which lacks what the exception changed (an empty shelf, a
    moved address, a stalled pickup): these ops restore it. Stock is taken for every SKU of the
    orders' categories at every store, so substitutes and transfers see what the agent saw."""
    from tools.models import Order, OrderLine, Sku, Stock, aware

    ops: list[dict[str, Any]] = []
    categories: set[str] = set()
    for oid in inc.order_ids or []:
        order = s.get(Order, oid)
        if order is None:
            continue
        fields = {}
        for f in ORDER_FIELDS:
            v = getattr(order, f)
            fields[f] = aware(v).isoformat() if hasattr(v, "isoformat") else v
        ops.append({"op": "set", "entity": "order", "id": oid, "fields": fields})
        for line in s.exec(select(OrderLine).where(OrderLine.order_id == oid)):
            if line.status == "short":  # what picking found: replayed, not what the agent did after
                ops.append({"op": "set", "entity": "order_line", "id": line.id, "fields": {"status": "short"}})
            sku = s.get(Sku, line.substituted_from or line.sku_id)
            if sku is not None:
                categories.add(sku.category)
    if categories:
        skus = [k.id for k in s.exec(select(Sku).where(col(Sku.category).in_(sorted(categories))))]
        for st in s.exec(select(Stock).where(col(Stock.sku_id).in_(skus)).order_by(col(Stock.store_id))):
            ops.append({"op": "set_stock", "store_id": st.store_id, "sku_id": st.sku_id, "on_hand": st.on_hand})
    return ops


def _dedupe(patterns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for p in patterns:
        key = repr(sorted(p.items()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out

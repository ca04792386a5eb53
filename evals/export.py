"""A recorded incident becomes a regression case: ``orderagent eval export --incident ID``.

The case rebuilds the incident's world from its source (the preset and seed, or the MDRP day and the
minute the incident opened), replays the events exactly as they were received, answers approvals as
the supervisors did, and expects what happened then: the steps that executed must execute again,
the steps supervisors rejected or let expire must not, the steps that went to approval must again,
and no order may be paid more than it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from evals.case import IncidentCase
from evals.trajectory import incident_steps
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
    from agent.models import Incident, IncidentEvent
    from guardrails.models import ApprovalRequest, ApprovalStep
    from tools.models import Compensation

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
        at_open = _before_the_agent(s, inc)
        setup = [
            {"op": "set", "entity": "rider", "id": rid, "fields": {"status": "offline"}}
            for rid in _offline_at_open(s, inc)
        ]
        setup += _subject_state(s, inc, at_open)
        weather, no_weather = _weather_ops(s, inc, events)
        setup += weather
        trajectory = incident_steps(session=s, incident_id=inc.id)
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
        # every thread's executed steps (a follow-up thread plans again, indices from 0), with the
        # arguments that ran: an approver's edit among them
        must_execute = [pattern for st in trajectory if st.succeeded for pattern in _patterns(st.tool, st.args)]
        # per order, as the evaluator adds them up: an order refunded line by line was paid the sum
        paid: dict[str, int] = {}
        for c in s.exec(select(Compensation).where(col(Compensation.order_id).in_(inc.order_ids or [""]))):
            paid[c.order_id] = paid.get(c.order_id, 0) + c.amount_cents
    title = f"Regression: incident {incident_id} ({inc.type}) as handled on {inc.opened_at:%Y-%m-%d}"
    if no_weather:
        # the replay would run without the slowdown and is not the incident: say so where a reader looks
        title += (
            f". NOT FAITHFUL: the weather of event(s) {', '.join(no_weather)} is not in the world and could"
            " not be restored; the replay runs without it"
        )
    case = {
        "schema_version": 1,
        "id": f"exported-{incident_id.lower()}"[:80],
        "title": title,
        "suites": ["exported"],
        "tags": ["exported", inc.type] + (["weather-not-restored"] if no_weather else []),
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
            "compensation": {"max_per_order_cents": max(paid.values())} if paid else None,
            "incidents": 1,
        },
    }
    IncidentCase.model_validate(case)  # the export is a valid case or an error here, not at replay
    return case


# order fields an exception changes (injectors and order systems); statuses and riders are left to replay
ORDER_FIELDS = ("x", "y", "ready_at", "promised_at", "picked_up_at", "note")


@dataclass
class AgentWrites:
    """What the writes made after the incident opened changed in stock and lines, to be undone: the
    database holds the world as it is now, the case must start from the world as it was then."""

    on_hand: dict[tuple[str, str], int] = field(default_factory=dict)  # (store, sku) -> units to add back
    substituted: dict[int, dict[str, Any]] = field(default_factory=dict)  # line id -> substitute_item result
    restored: set[int] = field(default_factory=set)  # short lines a transfer made ok again
    moved_orders: set[str] = field(default_factory=set)  # orders whose ready time a transfer moved


def _before_the_agent(s: Session, inc: Any) -> AgentWrites:
    """Undo what the recorded results of succeeded write steps changed: the incident's own, and any
    other incident's that started after this one opened. Only transfers move ``on_hand``; reservations
    are not exported (``set_stock`` keeps a rebuilt row's reservations within what is on hand)."""
    from agent.models import ExecutedStep, ExecutionStatus
    from tools.models import aware

    out = AgentWrites()
    rows = s.exec(
        select(ExecutedStep)
        .where(col(ExecutedStep.tool).in_(("transfer_stock", "substitute_item")))
        .where(ExecutedStep.status == ExecutionStatus.succeeded)
        .order_by(col(ExecutedStep.started_at))
    )
    for e in rows:
        if e.incident_id != inc.id and aware(e.started_at) <= aware(inc.opened_at):
            continue
        r = e.result or {}
        if r.get("duplicate") or not r.get("ok", True):
            continue
        if e.tool == "transfer_stock":
            qty = int(r["quantity"])
            src, dst = (r["from_store_id"], r["sku_id"]), (r["to_store_id"], r["sku_id"])
            out.on_hand[src] = out.on_hand.get(src, 0) + qty
            out.on_hand[dst] = out.on_hand.get(dst, 0) - qty
            out.moved_orders.add(r["order_id"])
            if r.get("restored_line_id"):
                out.restored.add(int(r["restored_line_id"]))
        else:
            out.substituted[int(r["line_id"])] = r
    return out


def _offline_at_open(s: Session, inc: Any) -> list[str]:
    """The riders offline when the incident opened: every rider a rider_offline event received by then
    named (whichever incident it joined), the incident's own riders that are offline now (a late
    event's rider goes offline before the replay's first plan: the case format has no later moment),
    and the riders offline now that no event took offline (an order system's or an injector's change
    without an event of its own, e.g. every other rider gone) unless the incident's first
    investigation saw them working; not those a later event took offline."""
    from agent.models import IncidentEvent
    from tools.models import Rider, RiderStatus, aware

    before: set[str] = set()
    later: set[str] = set()
    for ev in s.exec(select(IncidentEvent).where(IncidentEvent.type == "rider_offline")):
        named = {str(r) for r in (ev.event or {}).get("rider_ids") or []}
        (before if aware(ev.received_at) <= aware(inc.opened_at) else later).update(named)
    offline_now = {r.id for r in s.exec(select(Rider).where(Rider.status == RiderStatus.offline))}
    own = offline_now & set(inc.rider_ids or [])
    silent = offline_now - later - before - own - _seen_working(s, inc)
    return sorted(before | own | silent)


def _seen_working(s: Session, inc: Any) -> set[str]:
    """The riders the incident's first investigation snapshot saw idle or busy: whatever took them
    offline since (a supervisor, an order system without an event) came after the incident opened."""
    from audit.models import DecisionRecord
    from audit.service import get_snapshot

    first = s.exec(
        select(DecisionRecord)
        .where(DecisionRecord.incident_id == inc.id, DecisionRecord.stage == "investigation")
        .order_by(col(DecisionRecord.seq))
    ).first()
    sha = ((first.result if first is not None else None) or {}).get("snapshot_sha")
    seen: set[str] = set()
    stack: list[Any] = [get_snapshot(session=s, sha256=sha) if sha else None]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            # a rider's facts; an order's status is never idle or busy, so its rider_id is not taken
            if isinstance(node.get("rider_id"), str) and node.get("status") in ("idle", "busy"):
                seen.add(node["rider_id"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def _short_skus(s: Session, inc: Any) -> dict[str, set[str]]:
    """Per order, the SKUs found short: named by the incident's stockout events, or recorded by picking."""
    from agent.models import IncidentEvent
    from tools.models import OrderEvent

    out: dict[str, set[str]] = {}
    for ev in s.exec(select(IncidentEvent).where(IncidentEvent.incident_id == inc.id)):
        body = ev.event or {}
        if body.get("type") == "stockout_after_payment":
            for oid in body.get("order_ids") or []:
                out.setdefault(oid, set()).update((body.get("payload") or {}).get("sku_ids") or [])
    stmt = select(OrderEvent).where(col(OrderEvent.order_id).in_(inc.order_ids or [""]), OrderEvent.kind == "stockout")
    for oe in s.exec(stmt):
        out.setdefault(oe.order_id, set()).update(str(x["sku_id"]) for x in (oe.detail or {}).get("short") or [])
    return out


def _subject_state(s: Session, inc: Any, undo: AgentWrites) -> list[dict[str, Any]]:
    """Set-up operations that put the incident's orders and their stock back as they stood when it opened.

    The world is rebuilt from its source, which lacks what the exception changed (an empty shelf, a
    moved address, a stalled pickup): these ops restore it, without what the agent did after (a
    substitute, a transfer). Stock is taken for every SKU of the orders' categories at every store,
    so substitutes and transfers see what the agent saw."""
    from tools.models import Order, OrderLine, Sku, Stock, aware

    ops: list[dict[str, Any]] = []
    categories: set[str] = set()
    short = _short_skus(s, inc)
    for oid in inc.order_ids or []:
        order = s.get(Order, oid)
        if order is None:
            continue
        fields: dict[str, Any] = {}
        for f in ORDER_FIELDS:
            if f == "ready_at" and oid in undo.moved_orders:
                continue  # a transfer moved it to the units' arrival: the rebuilt world's is the one before
            v = getattr(order, f)
            fields[f] = aware(v).isoformat() if hasattr(v, "isoformat") else v
        lines = list(s.exec(select(OrderLine).where(OrderLine.order_id == oid).order_by(col(OrderLine.id))))
        subs = [undo.substituted[ln.id] for ln in lines if ln.id in undo.substituted]
        # the value the order had (a set-up may have priced its lines): a substitute changed it since
        fields["value_cents"] = order.value_cents - sum(int(r["customer_price_change_cents"]) for r in subs)
        ops.append({"op": "set", "entity": "order", "id": oid, "fields": fields})
        for line in lines:
            ops.append({"op": "set", "entity": "order_line", "id": line.id, "fields": _line_at_open(line, undo, short)})
            sku = s.get(Sku, line.substituted_from or line.sku_id)
            if sku is not None:
                categories.add(sku.category)
    if categories:
        skus = [k.id for k in s.exec(select(Sku).where(col(Sku.category).in_(sorted(categories))))]
        stock = s.exec(
            select(Stock).where(col(Stock.sku_id).in_(skus)).order_by(col(Stock.store_id), col(Stock.sku_id))
        )
        for st in stock:
            on_hand = st.on_hand + undo.on_hand.get((st.store_id, st.sku_id), 0)
            ops.append({"op": "set_stock", "store_id": st.store_id, "sku_id": st.sku_id, "on_hand": on_hand})
    return ops


def _line_at_open(line: Any, undo: AgentWrites, short: dict[str, set[str]]) -> dict[str, Any]:
    """An order line's fields as they were when the incident opened: its SKU and price before a
    substitute, short again when picking found it short (a transfer or a substitute resolved it since)."""
    sub = undo.substituted.get(line.id)
    if sub is not None:
        sku, price, was = str(sub["from_sku_id"]), int(sub["original_unit_price_cents"]), None
    else:
        sku, price, was = line.sku_id, line.unit_price_cents, line.substituted_from
    found_short = line.status == "short" or line.id in undo.restored or sku in short.get(line.order_id, set())
    status = "short" if found_short else ("ok" if sub is not None else line.status)
    return {
        "sku_id": sku,
        "quantity": line.quantity,
        "unit_price_cents": price,
        "substituted_from": was,
        "status": status,
    }


def _weather_ops(s: Session, inc: Any, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The weather the incident's weather events reported, found by its disc in the world's weather;
    and a note for each such event whose weather the world does not hold (it cannot be restored)."""
    from tools.models import Weather, aware

    ops: list[dict[str, Any]] = []
    missing: list[str] = []
    for ev in (e["event"] for e in events):
        if ev.get("type") != "weather_slowdown":
            continue
        p = ev.get("payload") or {}
        found = None
        if all(isinstance(p.get(k), int | float) for k in ("x", "y", "radius_m")):
            found = s.exec(
                select(Weather)
                .where(Weather.x == float(p["x"]), Weather.y == float(p["y"]), Weather.radius_m == float(p["radius_m"]))
                .where(col(Weather.starts_at) <= inc.opened_at)
                .order_by(col(Weather.id))
            ).first()
        if found is None:
            missing.append(str(ev.get("id", "?")))
            continue
        fields = found.model_dump(exclude={"id"})
        for k in ("starts_at", "ends_at"):
            fields[k] = aware(fields[k]).isoformat()
        ops.append({"op": "add", "entity": "weather", "fields": fields})
    return ops, missing


def _dedupe(patterns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for p in patterns:
        key = repr(sorted(p.items()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out

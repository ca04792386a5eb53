"""Turn a case into a world and a list of events: build, bind, set up, inject.

Injectors change the world the way the exception would (a rider goes offline, a shelf is empty,
an order stops moving) and return the ExceptionEvent an order system would send about it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from evals.case import Binding, EventSpec, IncidentCase, SetupOp
from tools.events import ExceptionEvent, ExceptionType
from tools.models import Customer, Order, OrderLine, Rider, RiderStatus, Sku, Stock, Store, StoreKind, Weather, aware
from tools.service import get_world, set_world_now, world_now
from tools.state_machine import OrderStatus

REF = re.compile(r"^\$([a-z_][a-z0-9_]*)(?:\.([a-z_]+))?$")


class ScenarioError(Exception):
    """A case that cannot be set up on its world (a binding finds nothing, an unknown reference)."""


def build_world(*, session: Session, case: IncidentCase, data_dir: Any) -> list[ExceptionEvent]:
    """Fill the database with the case's world; return the preset's reference events."""
    spec = case.world
    if spec.preset:
        from tools.world.generate import generate_world

        generated = generate_world(session=session, preset=spec.preset, seed=spec.seed)
        session.commit()
        return list(generated.events)
    from tools.world.mdrp import load_mdrp

    load_mdrp(session=session, path=data_dir / "mdrp" / str(spec.mdrp), seed=spec.seed)
    session.commit()
    if spec.minute:
        from tools.sim.baseline import BaselineDispatcher
        from tools.sim.engine import Simulation

        sim = Simulation.from_session(session, BaselineDispatcher(), spec.seed)
        sim.run(until=spec.minute)
        sim.sync_to_session(session)
        session.commit()
    return []


# ---- bindings -----------------------------------------------------------------------------------


def _active_orders(session: Session) -> list[Order]:
    """The world's active orders now (on a replayed real day, not those placed later)."""
    from tools.orders.eta import active_at

    stmt = select(Order).where(active_at(world_now(session=session))).order_by(Order.id)
    return list(session.exec(stmt))


def _busiest_rider(session: Session) -> Rider:
    stmt = (
        select(Order.rider_id, func.count())
        .where(col(Order.rider_id).is_not(None))
        .where(col(Order.status).in_([OrderStatus.assigned.value, OrderStatus.picked_up.value]))
        .group_by(Order.rider_id)
        .order_by(func.count().desc(), col(Order.rider_id))
    )
    row = session.exec(stmt).first()
    if row is None:
        raise ScenarioError("no rider has orders in hand")
    rider = session.get(Rider, row[0])
    assert rider is not None
    return rider


def _first(orders: list[Order], what: str) -> Order:
    if not orders:
        raise ScenarioError(f"no {what} in this world")
    return orders[0]


def _dark_store_orders(session: Session) -> list[Order]:
    dark = {s.id for s in session.exec(select(Store).where(Store.kind == StoreKind.dark_store))}
    with_lines = set(session.exec(select(OrderLine.order_id)))
    states = {OrderStatus.confirmed, OrderStatus.picking}
    return [o for o in _active_orders(session) if o.store_id in dark and o.id in with_lines and o.status in states]


def _has_substitute(session: Session, order: Order) -> bool:
    from tools.base import ToolContext
    from tools.registry import get_tool

    line = session.exec(select(OrderLine).where(OrderLine.order_id == order.id).order_by(col(OrderLine.id))).first()
    tool = get_tool("find_substitutes")
    if line is None or tool is None:
        return False
    ctx = ToolContext(session=session, now=world_now(session=session), actor="eval", incident_id=None)
    out = tool.invoke(ctx, {"store_id": order.store_id, "sku_id": line.sku_id, "quantity": line.quantity})
    return bool(out.get("ok", True) and out.get("substitutes"))


def _select(session: Session, name: str) -> Any:
    if name == "busiest_rider":
        return _busiest_rider(session)
    orders = _active_orders(session)
    if name == "picked_up_order":
        return _first([o for o in orders if o.status == OrderStatus.picked_up], "picked-up order")
    if name == "assigned_order":
        return _first([o for o in orders if o.status == OrderStatus.assigned], "assigned order")
    if name == "dark_store_order":
        return _first(_dark_store_orders(session), "dark-store order being picked")
    if name == "substitutable_dark_store_order":
        # its first line (the one the stockout injector empties) has a same-category substitute in
        # stock at the store, within find_substitutes' default price band
        return _first([o for o in _dark_store_orders(session) if _has_substitute(session, o)], "substitutable order")
    if name == "high_value_dark_store_order":
        candidates = sorted(_dark_store_orders(session), key=lambda o: (-o.value_cents, o.id))
        return _first(candidates, "dark-store order")
    if name == "busiest_store":
        counts: dict[str, int] = {}
        for o in orders:
            if o.status in (OrderStatus.confirmed, OrderStatus.picking, OrderStatus.ready, OrderStatus.assigned):
                counts[o.store_id] = counts.get(o.store_id, 0) + 1
        if not counts:
            raise ScenarioError("no store has orders waiting")
        store_id = sorted(counts, key=lambda s: (-counts[s], s))[0]
        return session.get(Store, store_id)
    raise ScenarioError(f"unknown selector {name!r}")


ENTITIES: dict[str, Any] = {
    "order": Order,
    "order_line": OrderLine,
    "rider": Rider,
    "customer": Customer,
    "store": Store,
    "weather": Weather,
}


def resolve_bindings(*, session: Session, bind: dict[str, Binding]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, b in bind.items():
        if b.select:
            row = _select(session, b.select)
        else:
            model = ENTITIES[b.entity]
            stmt = select(model)
            for key, value in b.where.items():
                stmt = stmt.where(getattr(model, key) == value)
            rows = list(session.exec(stmt.order_by(model.id)))
            if len(rows) <= b.index:
                raise ScenarioError(f"binding {name!r}: no {b.entity} matches {b.where}")
            row = rows[b.index]
        out[name] = row.model_dump()
    return out


def substitute(value: Any, bound: dict[str, dict[str, Any]]) -> Any:
    """Replace "$name" / "$name.field" strings by the bound ids and fields, recursively."""
    if isinstance(value, str):
        m = REF.match(value)
        if not m:
            return value
        name, attr = m.group(1), m.group(2) or "id"
        if name not in bound:
            raise ScenarioError(f"unbound reference {value!r}")
        return bound[name][attr]
    if isinstance(value, list):
        return [substitute(v, bound) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, bound) for k, v in value.items()}
    return value


# ---- set-up operations ----------------------------------------------------------------------------


def apply_op(*, session: Session, op: SetupOp, bound: dict[str, dict[str, Any]]) -> None:
    if op.op == "advance_minutes":
        set_world_now(session=session, now=world_now(session=session) + timedelta(minutes=op.minutes or 0))
        return
    if op.op == "set_lines":
        order_id = substitute(op.id, bound)
        lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order_id)))
        if not lines:
            raise ScenarioError(f"set_lines: order {order_id!r} has no lines")
        for line in lines:
            for key, value in substitute(op.fields, bound).items():
                setattr(line, key, value)
            session.add(line)
        order = session.get(Order, order_id)
        if order is not None:  # the order's value follows its lines
            order.value_cents = sum(ln.unit_price_cents * ln.quantity for ln in lines)
            order.version += 1
            session.add(order)
        return
    if op.op == "set_stock":
        stock = session.get(Stock, (substitute(op.store_id, bound), substitute(op.sku_id, bound)))
        if stock is None and not op.on_hand:
            return  # a store without the row has none on hand already (an export: a transfer made the row)
        if stock is None:
            raise ScenarioError(f"no stock row for {op.store_id}/{op.sku_id}")
        stock.on_hand = int(op.on_hand or 0)
        stock.reserved = min(stock.reserved, stock.on_hand)
        session.add(stock)
        return
    assert op.entity is not None
    model = ENTITIES[op.entity]
    if op.op == "add":
        session.add(model(**_typed(substitute(op.fields, bound))))
        return
    if op.id == "ALL_IDLE":  # every idle rider (stale-approval cases)
        rows = list(session.exec(select(Rider).where(Rider.status == RiderStatus.idle)))
    else:
        row = session.get(model, substitute(op.id, bound))
        if row is None:
            raise ScenarioError(f"set: no {op.entity} {op.id!r}")
        rows = [row]
    for row in rows:
        for key, value in _typed(substitute(op.fields, bound)).items():
            setattr(row, key, value)
        if isinstance(row, Order):
            row.version += 1
        session.add(row)


def _typed(fields: dict[str, Any]) -> dict[str, Any]:
    """Timestamps (``*_at``) given as ISO text become aware datetimes."""
    return {
        k: aware(datetime.fromisoformat(v)) if k.endswith("_at") and isinstance(v, str) else v
        for k, v in fields.items()
    }


# ---- injectors ---------------------------------------------------------------------------------------


def _event(etype: ExceptionType, session: Session, event_id: str, **fields: Any) -> ExceptionEvent:
    return ExceptionEvent(id=event_id, type=etype, occurred_at=world_now(session=session), source="eval", **fields)


def _order(session: Session, order_id: str) -> Order:
    order = session.get(Order, order_id)
    if order is None:
        raise ScenarioError(f"unknown order {order_id!r}")
    return order


def inject(*, session: Session, spec: EventSpec, bound: dict[str, dict[str, Any]], event_id: str) -> ExceptionEvent:
    p = substitute(spec.params, bound)
    now = world_now(session=session)
    kind = spec.inject
    if kind == "rider_offline":
        rider = session.get(Rider, p["rider"])
        if rider is None:
            raise ScenarioError(f"unknown rider {p['rider']!r}")
        rider.status = RiderStatus.offline
        session.add(rider)
        in_hand = list(
            session.exec(
                select(Order)
                .where(Order.rider_id == rider.id)
                .where(col(Order.status).in_([OrderStatus.assigned.value, OrderStatus.picked_up.value]))
                .order_by(Order.id)
            )
        )
        if p.get("others_offline"):
            for other in session.exec(select(Rider).where(Rider.id != rider.id)):
                other.status = RiderStatus.offline
                session.add(other)
        return _event(
            ExceptionType.rider_offline,
            session,
            event_id,
            zone=rider.zone,
            rider_ids=[rider.id],
            order_ids=[o.id for o in in_hand],
            customer_ids=sorted({o.customer_id for o in in_hand}),
            # the rider app's last known position: where a bag already picked up waits for a handover
            payload={"reason": "app offline", "orders_in_hand": len(in_hand), "x": rider.x, "y": rider.y},
        )
    if kind == "weather_slowdown":
        world = get_world(session=session)
        orders = _active_orders(session)
        if not orders:
            raise ScenarioError("no active orders to slow down")
        xs = sorted(o.x for o in orders)
        ys = sorted(o.y for o in orders)
        cx, cy = xs[len(xs) // 2], ys[len(ys) // 2]
        radius = float(p.get("radius_m", 3000))
        zone = str(p.get("zone") or orders[0].zone or "eval-storm")
        session.add(
            Weather(
                zone=zone,
                x=cx,
                y=cy,
                radius_m=radius,
                speed_factor=float(p.get("factor", 0.6)),
                starts_at=now,
                ends_at=now + timedelta(minutes=float(p.get("minutes", 60))),
                label="storm",
            )
        )
        inside = [o for o in orders if (o.x - cx) ** 2 + (o.y - cy) ** 2 <= radius**2]
        del world
        return _event(
            ExceptionType.weather_slowdown,
            session,
            event_id,
            zone=zone,
            order_ids=[o.id for o in inside],
            payload={"speed_factor": float(p.get("factor", 0.6)), "x": cx, "y": cy, "radius_m": radius},
        )
    if kind == "prep_delay":
        store = session.get(Store, p["store"])
        if store is None:
            raise ScenarioError(f"unknown store {p['store']!r}")
        minutes = int(p.get("minutes", 20))
        store.prep_delay_minutes += minutes
        session.add(store)
        waiting = [
            o for o in _active_orders(session) if o.store_id == store.id and o.status not in (OrderStatus.picked_up,)
        ]
        for o in waiting:
            o.ready_at = o.ready_at + timedelta(minutes=minutes)
            o.version += 1
            session.add(o)
        return _event(
            ExceptionType.prep_delay,
            session,
            event_id,
            zone=store.zone,
            store_ids=[store.id],
            order_ids=[o.id for o in waiting],
            customer_ids=sorted({o.customer_id for o in waiting}),
            payload={"delay_minutes": minutes},
        )
    if kind == "stockout_after_payment":
        order = _order(session, p["order"])
        lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order.id).order_by(col(OrderLine.id))))
        if not lines:
            raise ScenarioError(f"order {order.id} has no lines")
        short = lines if p.get("all_lines") else lines[:1]
        for line in short:
            stock = session.get(Stock, (order.store_id, line.sku_id))
            if stock is not None:
                stock.on_hand = 0
                stock.reserved = 0
                session.add(stock)
            line.status = "short"
            session.add(line)
            sku = session.get(Sku, line.sku_id)
            if sku is not None and (p.get("no_substitutes") or p.get("no_nearby")):
                same_cat = [s.id for s in session.exec(select(Sku).where(Sku.category == sku.category))]
                for st in session.exec(select(Stock).where(col(Stock.sku_id).in_(same_cat))):
                    at_home = st.store_id == order.store_id
                    if (p.get("no_substitutes") and at_home) or (p.get("no_nearby") and st.sku_id == sku.id):
                        st.on_hand = 0
                        st.reserved = 0
                        session.add(st)
        return _event(
            ExceptionType.stockout_after_payment,
            session,
            event_id,
            zone=order.zone,
            order_ids=[order.id],
            store_ids=[order.store_id],
            customer_ids=[order.customer_id],
            payload={"sku_ids": [line.sku_id for line in short], "found_at": "picking"},
        )
    if kind == "stalled_in_transit":
        order = _order(session, p["order"])
        stalled = float(p.get("minutes", 35))
        order.picked_up_at = now - timedelta(minutes=stalled)
        if "late_by" in p:  # the promise has already passed: the stall made the order late
            order.promised_at = now - timedelta(minutes=float(p["late_by"]))
        order.version += 1
        session.add(order)
        return _event(
            ExceptionType.stalled_in_transit,
            session,
            event_id,
            zone=order.zone,
            order_ids=[order.id],
            rider_ids=[order.rider_id] if order.rider_id else [],
            customer_ids=[order.customer_id],
            payload={"minutes_without_progress": stalled},
        )
    if kind == "address_change":
        order = _order(session, p["order"])
        order.x += float(p.get("dx", 900))
        order.y += float(p.get("dy", 600))
        order.version += 1
        session.add(order)
        return _event(
            ExceptionType.address_change,
            session,
            event_id,
            zone=order.zone,
            order_ids=[order.id],
            customer_ids=[order.customer_id],
            payload={"x": order.x, "y": order.y},
        )
    if kind == "customer_complaint":
        order = _order(session, p["order"])
        order.note = str(p.get("text", ""))
        session.add(order)
        return _event(
            ExceptionType.customer_complaint,
            session,
            event_id,
            zone=order.zone,
            order_ids=[order.id],
            customer_ids=[order.customer_id],
            payload={"text": order.note},
        )
    if kind == "order_late_risk":
        order = _order(session, p["order"])
        minutes_late = float(p.get("minutes_late", 20))
        # make the order late in fact: the promise is already close
        order.promised_at = now - timedelta(minutes=minutes_late) + timedelta(minutes=10)
        order.version += 1
        session.add(order)
        return _event(
            ExceptionType.order_late_risk,
            session,
            event_id,
            zone=order.zone,
            order_ids=[order.id],
            customer_ids=[order.customer_id],
            payload={"predicted_minutes_late": minutes_late},
        )
    raise ScenarioError(f"unknown injector {kind!r}")


def case_events(
    *,
    session: Session,
    case: IncidentCase,
    bound: dict[str, dict[str, Any]],
    preset_events: list[ExceptionEvent],
    trial: int,
) -> list[ExceptionEvent]:
    """Every event of the case, in order; injectors change the world as they go."""
    return spec_events(
        session=session, specs=case.events, bound=bound, id_prefix=f"{case.id}-t{trial}-e", preset_events=preset_events
    )


def spec_events(
    *,
    session: Session,
    specs: list[EventSpec],
    bound: dict[str, dict[str, Any]],
    id_prefix: str,
    preset_events: list[ExceptionEvent] | None = None,
) -> list[ExceptionEvent]:
    """The events of ``specs``, in order (the case's, or those arriving while an approval waits);
    an injected event without a fixed id gets ``id_prefix`` and its position."""
    events: list[ExceptionEvent] = []
    for i, spec in enumerate(specs):
        if spec.preset:
            events.extend(preset_events or [])
        elif spec.event is not None:
            events.append(ExceptionEvent.model_validate(substitute(spec.event, bound)))
        else:
            events.append(inject(session=session, spec=spec, bound=bound, event_id=spec.id or f"{id_prefix}{i}"))
    session.commit()
    return events

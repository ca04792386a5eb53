"""What a compensation quote is computed from, and how those features are read from the world DB.

For each affected order: predicted delay beyond the promise (minutes), order value, the customer's
expected 12-month value and repurchase frequency, tier, past complaints / compensations / refund
claims, the weather slowdown at the store or drop-off now, and the order's channel.

Sources, in order of preference:

* delay: the caller's figure (e.g. the reassignment forecast) -> ``tools.orders.eta.predict_dropoffs``
  when that module exists -> a simple estimate written here (``estimate_delay_minutes``).
* customer value: ``tools.customers.value.customer_values`` (the LTV model) when that module exists
  -> FALLBACK here: last 12 months of ``Purchase`` rows taken as next year's value and frequency.

Everything is read with one query per table, so a 1000-order quote stays a handful of queries.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field, TypeAdapter
from sqlalchemy import bindparam, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from tools.compensation import history as hist
from tools.db import in_param
from tools.geo import distance, travel_minutes
from tools.models import Customer, Order, Purchase, Rider, Store, Tier, Weather, WorldInfo, aware
from tools.state_machine import DomainError, OrderStatus

log = structlog.get_logger(__name__)

DelaySource = Literal["argument", "eta_model", "estimate"]
ValueSource = Literal["ltv_model", "purchase_history"]


class CompensationFeatures(BaseModel):
    """One order's model input (the columns of ``history.FEATURES``)."""

    delay_minutes: float
    order_value_cents: int = Field(ge=0)
    customer_value_12m_cents: int = Field(ge=0)
    tier: Tier = Tier.bronze
    repurchase_per_month: float = Field(ge=0.0)
    complaints_count: int = Field(default=0, ge=0)
    compensations_count: int = Field(default=0, ge=0)
    refund_claims_count: int = Field(default=0, ge=0)
    weather_speed_factor: float = Field(default=1.0, gt=0.0, le=1.0)
    channel: str = "app"

    def to_row(self) -> list[float]:
        # channels the history never saw are quoted like the app (the reference channel)
        channel = hist.CHANNELS.index(self.channel) if self.channel in hist.CHANNELS else 0
        return [
            float(self.delay_minutes),
            float(self.order_value_cents),
            float(self.customer_value_12m_cents),
            float(hist.TIERS.index(self.tier.value)),
            float(self.repurchase_per_month),
            float(self.complaints_count),
            float(self.compensations_count),
            float(self.refund_claims_count),
            float(self.weather_speed_factor),
            float(channel),
        ]

    @classmethod
    def from_row(cls, row: Sequence[float]) -> CompensationFeatures:
        v = dict(zip(hist.FEATURES, row, strict=True))
        return cls(
            delay_minutes=float(v["delay_minutes"]),
            order_value_cents=int(v["order_value_cents"]),
            customer_value_12m_cents=int(v["customer_value_12m_cents"]),
            tier=Tier(hist.TIERS[int(v["tier"])]),
            repurchase_per_month=float(v["repurchase_per_month"]),
            complaints_count=int(v["complaints_count"]),
            compensations_count=int(v["compensations_count"]),
            refund_claims_count=int(v["refund_claims_count"]),
            weather_speed_factor=float(v["weather_speed_factor"]),
            channel=hist.CHANNELS[int(v["channel"])],
        )


class OrderFeatures(BaseModel):
    order_id: str
    customer_id: str
    currency: str
    features: CompensationFeatures
    delay_source: DelaySource
    value_source: ValueSource


_ORDER_FEATURES = TypeAdapter(dict[str, OrderFeatures])


@dataclass(frozen=True)
class _Value:
    value_12m_cents: int
    repurchase_per_month: float


# what the features read of each order, its store and its customer: one statement, columns only
# (an ORM object per row cost more than the rest of the features together)
_FACT_COLUMNS: tuple[Any, ...] = (
    col(Order.id),
    col(Order.customer_id),
    col(Order.store_id),
    col(Order.x),
    col(Order.y),
    col(Order.currency),
    col(Order.value_cents),
    col(Order.channel),
    col(Store.x).label("store_x"),
    col(Store.y).label("store_y"),
    col(Customer.id).label("known_customer"),
    col(Customer.tier),
    col(Customer.complaints_count),
    col(Customer.compensations_count),
    col(Customer.refund_claims_count),
    col(Customer.channel).label("customer_channel"),
)


# the orders' feature columns, built once, the ids as one parameter (``in_param``)
_ORDER_FACTS = (
    sa_select(*_FACT_COLUMNS)
    .outerjoin(Store, col(Store.id) == col(Order.store_id))
    .outerjoin(Customer, col(Customer.id) == col(Order.customer_id))
    .where(in_param(col(Order.id), "ids"))
)


def build_features(
    *,
    session: Session,
    order_ids: list[str],
    now: datetime,
    predicted_delay_minutes: dict[str, float] | None = None,
) -> tuple[dict[str, OrderFeatures], dict[str, str]]:
    """Features per known order id, and ``{order_id: message}`` for the ids not in the world."""
    wanted = list(dict.fromkeys(order_ids))
    facts = {r.id: r for r in session.execute(_ORDER_FACTS, {"ids": wanted})}
    missing = {oid: f"unknown order {oid!r}" for oid in wanted if oid not in facts}
    if not facts:
        return {}, missing
    now = aware(now)
    customer_ids = sorted({r.customer_id for r in facts.values()})
    weather = active_weather(session=session, now=now)
    values, value_source = customer_value_features(session=session, customer_ids=customer_ids, now=now)

    given = predicted_delay_minutes or {}
    need_eta = [oid for oid in facts if oid not in given]
    # the delay estimates need whole orders, the world and the riders: only for orders without a given delay
    orders = {o.id: o for o in session.exec(select(Order).where(col(Order.id).in_(need_eta)))} if need_eta else {}
    eta_delays = _eta_model_delays(session=session, orders=[orders[o] for o in need_eta], now=now)
    estimated = [orders[o] for o in need_eta if o not in eta_delays]
    riders = _riders_of(session=session, orders=estimated)
    world = session.get(WorldInfo, 1) if estimated else None
    store_ids = sorted({o.store_id for o in estimated})
    stores = {st.id: st for st in session.exec(select(Store).where(col(Store.id).in_(store_ids)))} if store_ids else {}

    store_factor: dict[str, float] = {}
    out: dict[str, dict[str, Any]] = {}
    for oid in wanted:
        row = facts.get(oid)
        if row is None:
            continue
        if row.store_x is None:
            raise KeyError(row.store_id)
        if row.known_customer is None:
            raise KeyError(row.customer_id)
        if row.store_id not in store_factor:
            store_factor[row.store_id] = weather_factor_at(weather, row.store_x, row.store_y)
        factor = min(weather_factor_at(weather, row.x, row.y), store_factor[row.store_id])
        delay_source: DelaySource
        if oid in given:
            delay, delay_source = float(given[oid]), "argument"
        elif oid in eta_delays:
            delay, delay_source = eta_delays[oid], "eta_model"
        else:
            order = orders[oid]
            delay = estimate_delay_minutes(
                order=order,
                store=stores[order.store_id],
                rider=riders.get(order.rider_id or ""),
                world=world,
                now=now,
                speed_factor=factor,
            )
            delay_source = "estimate"
        value = values[row.customer_id]
        out[oid] = {
            "order_id": oid,
            "customer_id": row.customer_id,
            "currency": row.currency,
            "features": {
                "delay_minutes": round(delay, 2),
                "order_value_cents": max(row.value_cents, 0),
                "customer_value_12m_cents": value.value_12m_cents,
                "tier": Tier(row.tier),
                "repurchase_per_month": round(value.repurchase_per_month, 4),
                "complaints_count": row.complaints_count,
                "compensations_count": row.compensations_count,
                "refund_claims_count": row.refund_claims_count,
                "weather_speed_factor": factor,
                "channel": row.channel or row.customer_channel,
            },
            "delay_source": delay_source,
            "value_source": value_source[row.customer_id],
        }
    # one validation call in pydantic-core for every order (the same checks as a model per order)
    return _ORDER_FEATURES.validate_python(out), missing


_WEATHER_AT = select(Weather).where(col(Weather.starts_at) <= bindparam("now"), col(Weather.ends_at) > bindparam("now"))


def active_weather(*, session: Session, now: datetime) -> list[Weather]:
    return list(session.scalars(_WEATHER_AT, {"now": now}))


def weather_factor_at(rows: list[Weather], x: float, y: float) -> float:
    """The slowest speed factor among the weather discs covering a point (1.0 = clear)."""
    factor = 1.0
    for w in rows:
        if distance(x, y, w.x, w.y) <= w.radius_m:
            factor = min(factor, w.speed_factor)
    return max(min(factor, 1.0), 0.05)


def customer_value_features(
    *, session: Session, customer_ids: list[str], now: datetime
) -> tuple[dict[str, _Value], dict[str, ValueSource]]:
    """Expected 12-month value and repurchase frequency per customer, and where each came from."""
    values: dict[str, _Value] = {}
    source: dict[str, ValueSource] = {}
    ltv = _ltv_function()
    if ltv is not None:
        try:
            for cid, cv in ltv(session=session, customer_ids=customer_ids, now=now).items():
                values[cid] = _Value(
                    value_12m_cents=max(int(round(cv.expected_value_12m_cents)), 0),
                    repurchase_per_month=max(float(cv.repurchase_per_month), 0.0),
                )
                source[cid] = "ltv_model"
        except DomainError as exc:
            log.warning("compensation.ltv_unavailable", error=exc.message)
    rest = [cid for cid in customer_ids if cid not in values]
    if rest:
        for cid, v in purchase_history_values(session=session, customer_ids=rest, now=now).items():
            values[cid] = v
            source[cid] = "purchase_history"
    return values, source


def purchase_history_values(*, session: Session, customer_ids: list[str], now: datetime) -> dict[str, _Value]:
    """FALLBACK when the LTV model is absent: the last 12 months' spend and purchases per month,
    taken as next year's (a naive "next year looks like last year" forecast)."""
    since = now - timedelta(days=365)
    stmt = (
        select(Purchase.customer_id, func.count(), func.coalesce(func.sum(Purchase.amount_cents), 0))
        .where(col(Purchase.customer_id).in_(customer_ids))
        .where(Purchase.purchased_at > since, Purchase.purchased_at <= now)
        .group_by(Purchase.customer_id)
    )
    found = {cid: (int(n), int(total)) for cid, n, total in session.exec(stmt)}
    return {
        cid: _Value(value_12m_cents=found.get(cid, (0, 0))[1], repurchase_per_month=found.get(cid, (0, 0))[0] / 12)
        for cid in customer_ids
    }


def _ltv_function() -> Any:
    try:
        module = importlib.import_module("tools.customers.value")
    except ModuleNotFoundError as exc:
        if exc.name != "tools.customers.value":
            raise
        return None
    return getattr(module, "customer_values", None)


def _eta_model_delays(*, session: Session, orders: list[Order], now: datetime) -> dict[str, float]:
    """Delays from H5's ETA model (``tools.orders.eta.predict_dropoffs``) when it is installed."""
    if not orders:
        return {}
    try:
        module = importlib.import_module("tools.orders.eta")
    except ModuleNotFoundError as exc:
        if exc.name != "tools.orders.eta":
            raise
        return {}
    predict = getattr(module, "predict_dropoffs", None)
    if predict is None:
        return {}
    preds = predict(session=session, order_ids=[o.id for o in orders], now=now)
    out: dict[str, float] = {}
    for order in orders:
        pred = preds.get(order.id)
        delay = _delay_of_prediction(pred, order)
        if delay is not None:
            out[order.id] = delay
    return out


def _delay_of_prediction(pred: Any, order: Order) -> float | None:
    if pred is None:
        return None
    # H5's Prediction carries ``minutes_late`` and ``dropoff_at``; the other names are tolerated
    for name in ("minutes_late", "delay_minutes", "predicted_delay_minutes"):
        value = getattr(pred, name, None)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    for name in ("dropoff_at", "predicted_dropoff_at", "eta"):
        value = getattr(pred, name, None)
        if isinstance(value, datetime):
            return (aware(value) - aware(order.promised_at)).total_seconds() / 60.0
    return None


def _riders_of(*, session: Session, orders: list[Order]) -> dict[str, Rider]:
    ids = sorted({o.rider_id for o in orders if o.rider_id})
    if not ids:
        return {}
    return {r.id: r for r in session.exec(select(Rider).where(col(Rider.id).in_(ids)))}


def estimate_delay_minutes(
    *,
    order: Order,
    store: Store,
    rider: Rider | None,
    world: WorldInfo | None,
    now: datetime,
    speed_factor: float = 1.0,
) -> float:
    """Minutes past the promise at which the order will be (or was) dropped off; negative = early.

    Delivered: actual drop-off. Cancelled/failed: now (the wait the customer had). Otherwise the
    MDRP rules: the rider (or, unassigned, a rider already at the store) reaches the store, waits for
    the food, picks up, rides to the customer under the current weather, drops off.
    """
    promised = aware(order.promised_at)
    status = OrderStatus(order.status)
    if status == OrderStatus.delivered and order.delivered_at is not None:
        return (aware(order.delivered_at) - promised).total_seconds() / 60.0
    if status in (OrderStatus.cancelled, OrderStatus.failed, OrderStatus.delivered):
        return (now - promised).total_seconds() / 60.0
    mpm = world.meters_per_minute if world else 320.0
    pickup = world.pickup_service_minutes if world else 4
    dropoff = world.dropoff_service_minutes if world else 4
    if status == OrderStatus.picked_up and rider is not None:
        eta = now + timedelta(minutes=travel_minutes(distance(rider.x, rider.y, order.x, order.y), mpm, speed_factor))
    else:
        start = now
        if rider is not None and rider.free_at is not None:
            start = max(now, aware(rider.free_at))
        to_store = (
            0 if rider is None else travel_minutes(distance(rider.x, rider.y, store.x, store.y), mpm, speed_factor)
        )
        at_store = max(start + timedelta(minutes=to_store), aware(order.ready_at))
        ride = travel_minutes(distance(store.x, store.y, order.x, order.y), mpm, speed_factor)
        eta = at_store + timedelta(minutes=pickup + ride)
    eta += timedelta(minutes=dropoff)
    return (eta - promised).total_seconds() / 60.0

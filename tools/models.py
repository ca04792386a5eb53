"""Tables of the operational world: stores, stock, orders, riders, customers, compensations, notices.

Coordinates are metres on a plane (as in the MDRP instances); times are timezone-aware UTC;
money is integer minor units with a currency. One database holds one world (see ``WorldInfo``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from tools.state_machine import OrderStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH = _EPOCH_UTC.replace(tzinfo=None)  # naive on purpose: the origin naive datetimes are measured from


def aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; everything in the world is UTC."""
    if dt.tzinfo:
        return dt
    if type(dt) is datetime and not dt.fold:
        # dt.replace(tzinfo=UTC) by exact datetime arithmetic, the same value at an eighth of the
        # cost: the naive datetimes SQLite hands back pass here thousands of times per storm
        return _EPOCH_UTC + (dt - _EPOCH)
    return dt.replace(tzinfo=UTC)


# a datetime read back from the database, given out with its UTC offset on every backend (SQLite's
# are naive): for the models the API returns
UtcDatetime = Annotated[datetime, AfterValidator(aware)]


def ts_column(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


class StoreKind(StrEnum):
    restaurant = "restaurant"
    dark_store = "dark_store"


class RiderStatus(StrEnum):
    off_shift = "off_shift"
    idle = "idle"
    busy = "busy"
    offline = "offline"


class Tier(StrEnum):
    bronze = "bronze"
    silver = "silver"
    gold = "gold"
    platinum = "platinum"


class CompensationKind(StrEnum):
    coupon = "coupon"
    credit = "credit"
    refund = "refund"


class WorldInfo(SQLModel, table=True):
    """The single row describing the loaded world and its clock."""

    id: int = Field(default=1, primary_key=True)
    name: str
    source: str  # "mdrp:<instance>", "preset:<name>", ...
    seed: int = 0
    epoch: datetime = ts_column()  # minute 0 of the day
    now: datetime = ts_column()  # the world's clock
    meters_per_minute: float = 320.0
    pickup_service_minutes: int = 4
    dropoff_service_minutes: int = 4
    target_minutes: int = 40
    max_minutes: int = 90
    pay_per_order_cents: int = 1000
    pay_per_hour_cents: int = 1500
    currency: str = "USD"
    params: dict = Field(default_factory=dict, sa_column=Column(JSON))

    def at(self, minute: float) -> datetime:
        return aware(self.epoch) + timedelta(minutes=minute)

    def minute(self, when: datetime) -> float:
        epoch = self.epoch
        if (when.tzinfo is None) is (epoch.tzinfo is None):
            # both naive (UTC read back from SQLite) or both aware: the same difference without
            # making either aware first
            return (when - epoch).total_seconds() / 60.0
        return (aware(when) - aware(epoch)).total_seconds() / 60.0


class Weather(SQLModel, table=True):
    """A travel slowdown over a disc and a time window (factor 0.6 = 40% slower)."""

    id: int | None = Field(default=None, primary_key=True)
    zone: str = ""
    x: float
    y: float
    radius_m: float
    speed_factor: float = 1.0
    starts_at: datetime = ts_column()
    ends_at: datetime = ts_column()
    label: str = "rain"


class StoreBase(SQLModel):
    name: str
    kind: StoreKind = StoreKind.restaurant
    x: float
    y: float
    zone: str = ""
    prep_delay_minutes: int = 0


class Store(StoreBase, table=True):
    id: str = Field(primary_key=True)


class Sku(SQLModel, table=True):
    id: str = Field(primary_key=True)
    name: str
    category: str
    price_cents: int


class Stock(SQLModel, table=True):
    store_id: str = Field(foreign_key="store.id", primary_key=True)
    sku_id: str = Field(foreign_key="sku.id", primary_key=True)
    on_hand: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class CustomerBase(SQLModel):
    name: str
    tier: Tier = Tier.bronze
    x: float = 0.0
    y: float = 0.0
    channel: str = "app"
    complaints_count: int = 0
    refund_claims_count: int = 0
    compensations_count: int = 0


class Customer(CustomerBase, table=True):
    id: str = Field(primary_key=True)


class Purchase(SQLModel, table=True):
    """One past purchase: the history LTV is fitted on."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    purchased_at: datetime = ts_column()
    amount_cents: int
    quantity: int = 1


class OrderBase(SQLModel):
    customer_id: str = Field(foreign_key="customer.id", index=True)
    store_id: str = Field(foreign_key="store.id", index=True)
    x: float  # drop-off
    y: float
    zone: str = Field(default="", index=True)
    status: OrderStatus = Field(default=OrderStatus.placed, index=True)
    value_cents: int = 0
    currency: str = "USD"
    channel: str = "app"
    note: str = ""  # free text from the customer: untrusted data, never instructions


class Order(OrderBase, table=True):
    id: str = Field(primary_key=True)
    placed_at: datetime = ts_column()
    ready_at: datetime = ts_column()
    promised_at: datetime = ts_column()
    rider_id: str | None = Field(default=None, foreign_key="rider.id", index=True)
    assigned_at: datetime | None = ts_column(nullable=True)
    picked_up_at: datetime | None = ts_column(nullable=True)
    delivered_at: datetime | None = ts_column(nullable=True)
    closed_at: datetime | None = ts_column(nullable=True)
    priority: int = 0  # expedited orders get > 0
    on_hold: bool = False
    version: int = 0  # bumped on every change; stale plans compare it


class OrderLine(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="order.id", index=True)
    sku_id: str = Field(foreign_key="sku.id")
    quantity: int = 1
    unit_price_cents: int = 0
    substituted_from: str | None = None
    status: str = "ok"  # ok | short | substituted | removed


class OrderEvent(SQLModel, table=True):
    """An order's history: every status change and notable action."""

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="order.id", index=True)
    at: datetime = ts_column()
    from_status: str | None = None
    to_status: str | None = None
    kind: str = "transition"
    actor: str = "system"
    detail: dict = Field(default_factory=dict, sa_column=Column(JSON))


class RiderBase(SQLModel):
    name: str
    x: float
    y: float
    status: RiderStatus = RiderStatus.idle
    vehicle: str = "bike"
    capacity: int = 3
    zone: str = ""


class Rider(RiderBase, table=True):
    id: str = Field(primary_key=True)
    shift_start: datetime = ts_column()
    shift_end: datetime = ts_column()
    free_at: datetime | None = ts_column(nullable=True)  # when the current route ends


class Compensation(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("idempotency_key"),)
    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="order.id", index=True)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    kind: CompensationKind
    amount_cents: int
    currency: str = "USD"
    reason: str = ""
    idempotency_key: str
    incident_id: str | None = None
    created_at: datetime = ts_column()


class Notification(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("idempotency_key"),)
    id: int | None = Field(default=None, primary_key=True)
    order_id: str | None = Field(default=None, foreign_key="order.id", index=True)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    template: str
    message: str
    channel: str = "app"
    idempotency_key: str
    created_at: datetime = ts_column()


class Escalation(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("idempotency_key"),)
    id: int | None = Field(default=None, primary_key=True)
    incident_id: str | None = None
    order_ids: list = Field(default_factory=list, sa_column=Column(JSON))
    reason: str
    team: str = "ops"
    idempotency_key: str
    created_at: datetime = ts_column()

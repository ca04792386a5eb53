"""ExceptionEvent: what order systems (and the simulator) emit, and what POST /events accepts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator


class ExceptionType(StrEnum):
    rider_offline = "rider_offline"  # a rider drops off with orders in hand
    weather_slowdown = "weather_slowdown"  # travel slowed over an area and time window
    rider_shortage = "rider_shortage"  # too few riders for the orders in an area (storm)
    order_late_risk = "order_late_risk"  # an order predicted to miss its promise
    prep_delay = "prep_delay"  # a store prepares slower than planned
    stockout_after_payment = "stockout_after_payment"  # picking finds an item missing after payment
    stalled_in_transit = "stalled_in_transit"  # a picked-up order has not moved past a threshold
    address_change = "address_change"  # the customer changes the drop-off address
    customer_complaint = "customer_complaint"  # a customer writes in (free text, untrusted)


class ExceptionEvent(BaseModel):
    """One exception. ``id`` is the idempotency key: the same id twice has one effect."""

    model_config = ConfigDict(extra="forbid", str_max_length=4000)

    id: str = Field(min_length=1, max_length=128)
    type: ExceptionType
    occurred_at: AwareDatetime
    source: str = Field(default="simulator", max_length=64)
    zone: str = Field(default="", max_length=64, description="area used to correlate related events")
    order_ids: list[str] = Field(default_factory=list, max_length=5000)
    rider_ids: list[str] = Field(default_factory=list, max_length=1000)
    store_ids: list[str] = Field(default_factory=list, max_length=1000)
    customer_ids: list[str] = Field(default_factory=list, max_length=5000)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", "source", "zone", "order_ids", "rider_ids", "store_ids", "customer_ids")
    @classmethod
    def _no_nul(cls, value: str | list[str]) -> str | list[str]:
        # PostgreSQL text cannot hold NUL: an id with one would be accepted here and then fail every
        # run of its incident; refused at the door instead (422)
        for text in [value] if isinstance(value, str) else value:
            if "\x00" in text:
                raise ValueError("text may not contain NUL (\\u0000)")
        return value

    @model_validator(mode="after")
    def _storable_payload(self) -> ExceptionEvent:
        # JSON may carry an unpaired surrogate ("\ud83d": an emoji cut in half by a client). Typed
        # text fields refuse it (422); a payload value is Any, so it would pass, and could then be
        # neither stored nor hashed into the audit. Such code points become U+FFFD, as the audit does
        # with NUL: the event is kept and the damage stays visible.
        self.payload = storable(self.payload)
        return self

    def subjects(self) -> dict[str, list[str]]:
        return {
            "orders": self.order_ids,
            "riders": self.rider_ids,
            "stores": self.store_ids,
            "customers": self.customer_ids,
        }


def event_time(event: ExceptionEvent) -> datetime:
    return event.occurred_at


def storable(value: Any) -> Any:
    """``value`` with every string in it that is not valid UTF-8 (unpaired surrogates) repaired: the
    bad code points become U+FFFD. What needs no repair comes back as the same object."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, dict):
        fixed = {k: storable(v) for k, v in value.items()}
        return value if all(fixed[k] is v for k, v in value.items()) else fixed
    if isinstance(value, list):
        items = [storable(v) for v in value]
        return value if all(a is b for a, b in zip(value, items, strict=True)) else items
    return value

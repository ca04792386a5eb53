"""The fixed set of customer messages and the facts they may contain.

Messages are filled only with facts the system computed (ids, catalogue names, times, amounts,
fixed reason phrases). Nothing the customer wrote (``Order.note``) and nothing a model wrote in free
form reaches a template, so a message cannot be used to echo or inject text. ``str.format_map`` does
not re-interpret the values it inserts, and every placeholder must be provided.
"""

from __future__ import annotations

from typing import Literal

TemplateName = Literal["delay", "substitution", "refund", "address_confirm", "cancellation", "generic_apology"]
CancelReason = Literal["out_of_stock", "no_rider_available", "severe_weather", "store_closed", "customer_request"]

TEMPLATES: dict[str, str] = {
    "delay": (
        "Sorry, your order {order_id} from {store_name} is running late. "
        "It should now arrive around {eta_time} UTC, about {eta_minutes} minutes from now."
    ),
    "substitution": (
        "Your order {order_id} from {store_name}: {substitutions}. You will not pay more than the original price."
    ),
    "refund": "Your order {order_id}: we have refunded {amount} to your original payment method.",
    "address_confirm": (
        "Your order {order_id}: please confirm the drop-off address in the app so your rider can find you."
    ),
    "cancellation": (
        "Sorry, your order {order_id} from {store_name} has been cancelled ({reason}). You will not be charged for it."
    ),
    "generic_apology": "We are sorry about your order {order_id}. Our team is on it and will keep you posted.",
}

REASON_PHRASES: dict[str, str] = {
    "out_of_stock": "items are out of stock",
    "no_rider_available": "no rider could be found in time",
    "severe_weather": "severe weather in your area",
    "store_closed": "the store had to close",
    "customer_request": "as you requested",
}


def format_money(amount_cents: int, currency: str) -> str:
    major, minor = divmod(abs(amount_cents), 100)
    sign = "-" if amount_cents < 0 else ""
    return f"{sign}${major}.{minor:02d}" if currency == "USD" else f"{sign}{major}.{minor:02d} {currency}"


def render(template: str, facts: dict[str, str]) -> str:
    """Fill a template; KeyError for an unknown template or a missing fact (a programming error)."""
    return TEMPLATES[template].format_map(facts)

"""A seeded, synthetic log of past compensation decisions: the data the quote model learns from.

No public data set records what delivery dispatchers paid late customers, so the history is
generated from a written policy plus noise. The model in ``model.py`` is trained on it; the figures
it quotes are therefore "what dispatchers following this policy would have paid", not ground truth.

The policy (``policy_amount_cents`` is its noise-free form):

* Nothing is paid unless the predicted delay exceeds a grace period of ``GRACE_MINUTES`` (10).
* Past the grace, the amount grows linearly: ``BASE_CENTS`` (200) plus ``CENTS_PER_MINUTE`` (12)
  per minute of excess delay.
* Scaled by order value: ``sqrt(order value / $25)`` (a $100 order gets 2x a $25 one).
* Scaled by customer value: tier multiplier (bronze 1.0, silver 1.1, gold 1.25, platinum 1.45),
  times ``1 + 0.25 * tanh(expected 12-month value / $500)``, times
  ``1 + 0.12 * min(repurchase frequency per month, 5)`` (frequent buyers are worth keeping).
* Slightly raised for customers who complain often: ``1 + 0.04 * min(complaints, 6)``.
* Damped for customers who already received much: ``1 / (1 + 0.15 * past compensations +
  0.30 * refund claims)``.
* Raised in bad weather: ``1 + 0.5 * (1 - weather speed factor)`` (a factor 0.6 storm gives +20%).
* Channel effect: app 1.0, web 0.95, phone 1.15 (escalated by phone), marketplace 0.8 (the
  marketplace partner pays part of it).
* Capped at ``POLICY_CAP_CENTS`` ($50) and paid on a 50-cent grid.
* Kind (``policy_kind``): refund when the excess delay is ``REFUND_EXCESS_MINUTES`` (50) or more
  and the customer has fewer than 3 refund claims (a refund never exceeds the order value); else
  a credit for gold/platinum customers or anyone expected to spend more than $400 in 12 months;
  else a coupon.

The noise:

* Every amount is multiplied by lognormal noise, ``exp(N(0, 0.2))``.
* Dispatcher inconsistency: 6% of rows ignore the policy's level (amount times uniform(0, 2)),
  3% of the rows owed something got nothing (forgotten), and 5% of the kinds are drawn at random.

Feature distributions are chosen to look like a mid-size city: most orders roughly on time, a long
tail of late ones, a quarter under bad weather, tiers 50/30/15/5%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HISTORY_VERSION = "h1"
DEFAULT_ROWS = 20_000
DEFAULT_SEED = 20240601

GRACE_MINUTES = 10.0
BASE_CENTS = 200.0
CENTS_PER_MINUTE = 12.0
POLICY_CAP_CENTS = 5_000
GRID_CENTS = 50
REFUND_EXCESS_MINUTES = 50.0
REFUND_MAX_CLAIMS = 3
CREDIT_VALUE_CENTS = 40_000

TIERS = ("bronze", "silver", "gold", "platinum")
TIER_MULT = np.array([1.0, 1.1, 1.25, 1.45])
CHANNELS = ("app", "web", "phone", "marketplace")
CHANNEL_MULT = np.array([1.0, 0.95, 1.15, 0.8])
KINDS = ("coupon", "credit", "refund")

# column order of the feature matrix; the model and the DB feature builder use the same names
FEATURES = (
    "delay_minutes",
    "order_value_cents",
    "customer_value_12m_cents",
    "tier",
    "repurchase_per_month",
    "complaints_count",
    "compensations_count",
    "refund_claims_count",
    "weather_speed_factor",
    "channel",
)


@dataclass(frozen=True)
class History:
    """Feature matrix ``X`` (columns ``FEATURES``; tier and channel as integer codes), paid amounts
    in cents and kind codes (index into ``KINDS``)."""

    X: np.ndarray
    amount_cents: np.ndarray
    kind: np.ndarray
    seed: int

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def column(self, name: str) -> np.ndarray:
        return self.X[:, FEATURES.index(name)]


def policy_amount_cents(X: np.ndarray) -> np.ndarray:
    """The noise-free policy amount (float cents, before cap and grid) for a feature matrix."""
    col = {name: X[:, i] for i, name in enumerate(FEATURES)}
    excess = np.maximum(col["delay_minutes"] - GRACE_MINUTES, 0.0)
    amount = np.where(excess > 0, BASE_CENTS + CENTS_PER_MINUTE * excess, 0.0)
    amount = amount * np.sqrt(np.maximum(col["order_value_cents"], 1.0) / 2500.0)
    amount = amount * TIER_MULT[col["tier"].astype(int)]
    amount = amount * (1.0 + 0.25 * np.tanh(col["customer_value_12m_cents"] / 50_000.0))
    amount = amount * (1.0 + 0.12 * np.minimum(col["repurchase_per_month"], 5.0))
    amount = amount * (1.0 + 0.04 * np.minimum(col["complaints_count"], 6.0))
    amount = amount / (1.0 + 0.15 * col["compensations_count"] + 0.30 * col["refund_claims_count"])
    amount = amount * (1.0 + 0.5 * (1.0 - np.clip(col["weather_speed_factor"], 0.0, 1.0)))
    amount = amount * CHANNEL_MULT[col["channel"].astype(int)]
    return amount


def policy_kind(X: np.ndarray) -> np.ndarray:
    """The policy's kind code (index into ``KINDS``) for each row of a feature matrix."""
    col = {name: X[:, i] for i, name in enumerate(FEATURES)}
    excess = col["delay_minutes"] - GRACE_MINUTES
    refund = (excess >= REFUND_EXCESS_MINUTES) & (col["refund_claims_count"] < REFUND_MAX_CLAIMS)
    credit = (col["tier"] >= TIERS.index("gold")) | (col["customer_value_12m_cents"] > CREDIT_VALUE_CENTS)
    return np.where(refund, 2, np.where(credit, 1, 0)).astype(np.int64)


def to_grid(amount: np.ndarray, cap: np.ndarray | float = POLICY_CAP_CENTS) -> np.ndarray:
    """Clip to [0, cap] and round to the 50-cent payment grid (integer cents), never above the cap."""
    clipped = np.clip(amount, 0.0, cap)
    top = np.floor(np.asarray(cap, dtype=np.float64) / GRID_CENTS) * GRID_CENTS
    return np.minimum(np.round(clipped / GRID_CENTS) * GRID_CENTS, top).astype(np.int64)


def generate_history(*, n: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> History:
    """Draw ``n`` past decisions; the same seed gives the same bytes."""
    rng = np.random.default_rng(seed)
    late = rng.random(n) < 0.45
    delay = np.where(late, GRACE_MINUTES + rng.exponential(20.0, n), rng.normal(0.0, 8.0, n))
    delay = np.clip(delay, -30.0, 150.0)
    order_value = np.clip(rng.lognormal(np.log(2500.0), 0.5, n), 500.0, 20_000.0).round()
    tier = rng.choice(4, size=n, p=[0.5, 0.3, 0.15, 0.05])
    tier_median = np.array([8_000.0, 20_000.0, 50_000.0, 120_000.0])[tier]
    value_12m = (tier_median * rng.lognormal(0.0, 0.5, n)).round()
    repurchase = np.clip(value_12m / 12.0 / order_value * rng.lognormal(0.0, 0.3, n), 0.0, 20.0)
    complaints = rng.poisson(0.6, n)
    compensations = rng.poisson(0.9, n)
    refund_claims = rng.poisson(0.3, n)
    bad_weather = rng.random(n) < 0.25
    weather = np.where(bad_weather, rng.uniform(0.5, 0.95, n), 1.0)
    channel = rng.choice(4, size=n, p=[0.7, 0.15, 0.1, 0.05])
    X = np.column_stack(
        [
            delay,
            order_value,
            value_12m,
            tier,
            repurchase,
            complaints,
            compensations,
            refund_claims,
            weather,
            channel,
        ]
    ).astype(np.float64)

    amount = policy_amount_cents(X) * rng.lognormal(0.0, 0.2, n)
    inconsistent = rng.random(n) < 0.06
    amount = np.where(inconsistent, amount * rng.uniform(0.0, 2.0, n), amount)
    forgotten = (amount > 0) & (rng.random(n) < 0.03)
    amount = np.where(forgotten, 0.0, amount)

    kind = policy_kind(X)
    random_kind = rng.random(n) < 0.05
    kind = np.where(random_kind, rng.integers(0, 3, n), kind)
    # a refund can never exceed what the customer paid
    cap = np.where(kind == 2, np.minimum(order_value, POLICY_CAP_CENTS), POLICY_CAP_CENTS)
    return History(X=X, amount_cents=to_grid(amount, cap), kind=kind.astype(np.int64), seed=seed)

"""A customer's expected value over the next 12 months, from their purchase history in the database.

Value = E[purchases in 12 months] (BG/NBD) x E[amount per purchase] (Gamma-Gamma), undiscounted
(a 12-month horizon makes discounting a rounding error next to the model's own uncertainty).
The parameters are fitted on the world's own histories when it has enough customers (at least
``MIN_FIT_CUSTOMERS`` buyers and ``MIN_FIT_REPEAT`` repeat buyers, and a fit that stays inside the
parameter bounds); otherwise the CDNOW reference parameters (the published 39-week calibration fit,
reproduced by ``orderagent ltv fit``) are used. Fits are cached per database and history size, so a
call after the first costs two small queries and some numpy; a fresh copy of the same histories
(another database of the same world) finds the fit by a content key (one aggregate scan, no refit).

Tiers are percentiles of the fitted population's 12-month values: top 5% platinum, next 15% gold,
next 30% silver, the rest bronze. Customers with no purchases get the forecast for a just-acquired
customer (BG/NBD equation 9) and the population's mean spend.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, TypeAdapter
from sqlalchemy import String, bindparam, func, type_coerce
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from tools.customers.bgnbd import BgNbdParams, expected_purchases, expected_purchases_new, fit_bgnbd, p_alive
from tools.customers.gamma_gamma import GammaGammaParams, expected_spend, fit_gamma_gamma
from tools.customers.rfm import Summary, summarise
from tools.db import in_param
from tools.models import Customer, Purchase, Tier, WorldInfo, aware

log = structlog.get_logger(__name__)

FloatArray = NDArray[np.float64]

MODEL_FAMILY = "bgnbd-gg-1"
WEEKS_12M = 365.25 / 7.0
DAYS_PER_MONTH = 365.25 / 12.0
MIN_FIT_CUSTOMERS = 100
MIN_FIT_REPEAT = 30
TIER_PERCENTILES = (50.0, 80.0, 95.0)  # silver, gold, platinum start here
_CACHE_SIZE = 64  # per-database keys plus content keys; a model is a few numbers


class CustomerValue(BaseModel):
    """What the LTV model says about one customer (money in integer cents)."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    tier: Tier
    expected_purchases_12m: float
    expected_value_12m_cents: int
    p_alive: float
    repurchase_per_month: float  # expected purchases per month over the next 12 months
    frequency: int  # repeat purchase days so far
    recency_days: float  # first purchase -> last purchase
    tenure_days: float  # first purchase -> now (T)
    avg_order_cents: int  # mean of the repeat purchase days (0 when none)
    expected_order_cents: int  # Gamma-Gamma's shrunk estimate of the next purchase's amount
    currency: str = "USD"
    model_version: str
    model_source: str  # "world" or "cdnow-reference"


_VALUES = TypeAdapter(dict[str, CustomerValue])


@dataclass(frozen=True)
class PopulationModel:
    """Fitted parameters (spend in cents) and the tier cut points of the population they came from."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    tier_cuts_cents: tuple[int, int, int]
    source: str
    n_customers: int

    @property
    def version(self) -> str:
        payload = json.dumps(
            {"bgnbd": self.bgnbd.as_dict(), "gg": self.gamma_gamma.as_dict(), "cuts": self.tier_cuts_cents},
            sort_keys=True,
        )
        return f"{MODEL_FAMILY}:{self.source}:n{self.n_customers}:{hashlib.sha256(payload.encode()).hexdigest()[:8]}"

    def parameters(self) -> dict[str, Any]:
        return {
            "bgnbd": self.bgnbd.as_dict(),
            "gamma_gamma_cents": self.gamma_gamma.as_dict(),
            "tier_cuts_cents": list(self.tier_cuts_cents),
            "time_unit": "week",
        }

    def predict(
        self, frequency: FloatArray, recency: FloatArray, T: FloatArray, monetary: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(expected purchases in 12 months, P(alive), expected amount per purchase in cents)."""
        purchases = expected_purchases(self.bgnbd, WEEKS_12M, frequency, recency, T)
        alive = p_alive(self.bgnbd, frequency, recency, T)
        spend = expected_spend(self.gamma_gamma, frequency, np.where(monetary > 0, monetary, 0.0))
        # a repeat buyer whose repeat purchases were all free is not "unknown": no spend data -> mean
        spend = np.where((frequency > 0) & (monetary <= 0), self.gamma_gamma.population_mean, spend)
        return np.maximum(purchases, 0.0), alive, np.maximum(spend, 0.0)

    def values_12m_cents(self, summary: Summary) -> FloatArray:
        purchases, _alive, spend = self.predict(summary.frequency, summary.recency, summary.T, summary.monetary)
        return np.asarray(purchases * spend, dtype=float)


def tier_for_value(value_cents: int, cuts: tuple[int, int, int]) -> Tier:
    silver, gold, platinum = cuts
    if value_cents >= platinum:
        return Tier.platinum
    if value_cents >= gold:
        return Tier.gold
    if value_cents >= silver:
        return Tier.silver
    return Tier.bronze


def fit_population(summary: Summary, *, source: str) -> PopulationModel:
    """Fit BG/NBD and Gamma-Gamma on a summary whose amounts are in cents (weeks as time unit)."""
    bg = fit_bgnbd(summary.frequency, summary.recency, summary.T).params
    gg = fit_gamma_gamma(summary.frequency, summary.monetary).params
    model = PopulationModel(
        bgnbd=bg, gamma_gamma=gg, tier_cuts_cents=(0, 0, 0), source=source, n_customers=len(summary)
    )
    values = model.values_12m_cents(summary)
    cuts = tuple(int(round(float(np.percentile(values, p)))) for p in TIER_PERCENTILES)
    return PopulationModel(
        bgnbd=bg,
        gamma_gamma=gg,
        tier_cuts_cents=(cuts[0], cuts[1], cuts[2]),
        source=source,
        n_customers=len(summary),
    )


# The published CDNOW fit (39-week calibration of the 2,357-customer sample, daily-aggregated;
# 946 repeat buyers for Gamma-Gamma), as reproduced by `orderagent ltv fit`; gamma converted to cents.
# Tier cuts: percentiles of the sample's 12-month values as of 1998-06-30 under these parameters.
# tests/tools/test_customer_value.py re-derives all of it from the data.
REFERENCE_MODEL = PopulationModel(
    bgnbd=BgNbdParams(r=0.242594, alpha=4.413602, a=0.792922, b=2.425907),
    gamma_gamma=GammaGammaParams(p=6.249572, q=3.744225, gamma=1544.352),
    tier_cuts_cents=(553, 2617, 12483),
    source="cdnow-reference",
    n_customers=2357,
)


def _fit_is_sane(model: PopulationModel) -> bool:
    bg, gg = model.bgnbd, model.gamma_gamma
    inside = all(1e-3 < v < 5e3 for v in (bg.r, bg.a, bg.b)) and bg.alpha > 0
    return inside and gg.q > 1.0 and abs(bg.a - 1.0) > 1e-6


class _FitCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], PopulationModel] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> PopulationModel | None:
        with self._lock:
            model = self._items.get(key)
            if model is not None:
                self._items.move_to_end(key)
            return model

    def put(self, key: tuple[Any, ...], model: PopulationModel) -> None:
        with self._lock:
            self._items[key] = model
            while len(self._items) > _CACHE_SIZE:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache = _FitCache()


def clear_cache() -> None:
    _cache.clear()
    _values.clear()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = _EPOCH.replace(tzinfo=None)  # SQLite hands back naive UTC


_EPOCH_ORDINAL = _EPOCH.toordinal()
# purchased_at as the driver returns it: SQLite's stored UTC text (its date is all a summary needs,
# and parsing ~2,000 timestamps was most of a customer_values call), PostgreSQL's timestamptz
_PURCHASED_AT = type_coerce(col(Purchase.purchased_at), String)


def _day(dt: datetime | str) -> int:
    """Days since the Unix epoch (UTC), floored: ``timestamp() // 86400`` without the float detour.
    Text is SQLite's stored form of a UTC time ('YYYY-MM-DD HH:MM:SS...'): its date is the UTC day."""
    if isinstance(dt, str):
        return date.fromisoformat(dt[:10]).toordinal() - _EPOCH_ORDINAL
    return (dt - (_EPOCH if dt.tzinfo else _EPOCH_NAIVE)).days


def _days(stamps: Sequence[datetime | str]) -> NDArray[np.int64]:
    """``_day`` of each time; SQLite's text all at once (numpy parses the dates in C)."""
    texts = [t for t in stamps if isinstance(t, str)]
    if len(texts) == len(stamps):
        return np.array([t[:10] for t in texts], dtype="datetime64[D]").astype(np.int64)
    return np.fromiter((_day(t) for t in stamps), dtype=np.int64, count=len(stamps))


def _summarise_rows(rows: Sequence[tuple[str, datetime | str, int]], now: datetime) -> tuple[list[str], Summary]:
    cids, stamps, amounts = zip(*rows, strict=True) if rows else ((), (), ())
    ids = sorted(set(cids))
    index = {cid: i for i, cid in enumerate(ids)}
    keys = np.fromiter((index[c] for c in cids), dtype=np.int64, count=len(cids))
    summary = summarise(keys, _days(stamps), np.array(amounts, dtype=float), calibration_end=_day(now))
    return [ids[k] for k in summary.customer_keys.tolist()], summary


def _content_key(session: Session, now: datetime, world_key: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """What the fit depends on, independent of which database holds it: the world's identity and
    aggregates of the histories up to ``now``. Copies of one world (a benchmark's fresh copies, a
    test database per test) then share one fit instead of refitting per database."""
    row = session.execute(
        sa_select(
            func.count(col(Purchase.id)),
            func.count(func.distinct(col(Purchase.customer_id))),
            func.coalesce(func.sum(col(Purchase.amount_cents)), 0),
            func.min(col(Purchase.purchased_at)),
            func.max(col(Purchase.purchased_at)),
        ).where(col(Purchase.purchased_at) <= now)
    ).one()
    return ("content", world_key, *(str(v) for v in row), _day(now))


_ID_RANGE = sa_select(func.min(col(Purchase.id)), func.max(col(Purchase.id)))


def population_model(*, session: Session, now: datetime) -> PopulationModel:
    """The model for this database's histories up to ``now`` (cached), or the CDNOW reference."""
    now = aware(now)
    # min/max of the primary key are index look-ups (a count would scan); with the world's identity
    # they change whenever histories are loaded or appended. Histories up to `now` are what is fitted.
    min_id, max_id = session.execute(_ID_RANGE).one()
    world = session.get(WorldInfo, 1)
    world_key = None if world is None else (world.name, world.source, world.seed, str(world.epoch))
    bind = session.get_bind()
    key = (str(getattr(bind, "url", "")), id(bind), world_key, min_id, max_id, _day(now))
    cached = _cache.get(key)
    if cached is not None:
        return cached
    # second level: the same histories in another database (one scan of the purchases, no fit)
    content = _content_key(session, now, world_key) if max_id is not None else None
    if content is not None and (cached := _cache.get(content)) is not None:
        _cache.put(key, cached)
        return cached
    model = REFERENCE_MODEL
    n_rows = 0
    if max_id is not None:
        rows = list(
            session.exec(  # type: ignore[call-overload]
                select(Purchase.customer_id, _PURCHASED_AT, Purchase.amount_cents).where(
                    col(Purchase.purchased_at) <= now
                )
            ).all()
        )
        n_rows = len(rows)
        _ids, summary = _summarise_rows(rows, now)
        n_repeat = int(((summary.frequency > 0) & (summary.monetary > 0)).sum())
        if len(summary) >= MIN_FIT_CUSTOMERS and n_repeat >= MIN_FIT_REPEAT:
            try:
                fitted = fit_population(summary, source="world")
            except (ValueError, FloatingPointError) as exc:
                log.warning("ltv_world_fit_failed", error=str(exc))
            else:
                if _fit_is_sane(fitted):
                    model = fitted
                else:
                    log.warning("ltv_world_fit_rejected", params=fitted.parameters())
    log.info("ltv_model", source=model.source, version=model.version, purchases=n_rows)
    _cache.put(key, model)
    if content is not None:
        _cache.put(content, model)
    return model


class _ValueCache:
    """CustomerValue per customer, per (database, histories content, ``now``): an incident asks for
    the same customers twice (the compensation quotes in the investigation, then the guardrails'
    high-value check) at the same clock, so the second call finds the first one's answers."""

    def __init__(self, size: int = 4) -> None:  # a few clocks: one incident's calls share one
        self._lock = threading.Lock()
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], dict[str, CustomerValue]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> dict[str, CustomerValue]:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return {}
            self._items.move_to_end(key)
            return dict(found)

    def put(self, key: tuple[Any, ...], values: dict[str, CustomerValue]) -> None:
        with self._lock:
            self._items.setdefault(key, {}).update(values)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_values = _ValueCache()


def clear_world_caches() -> None:
    """Forget the customer values computed so far (the fitted population models stay): for a
    benchmark that replays one world from a fresh copy and must not find the last run's answers."""
    _values.clear()


# What any change to the purchase table moves: a purchase loaded, appended or removed moves the
# count, a re-priced one the sum, a re-dated first or last one the range. Over the whole table, not
# only the purchases up to `now`: a pass without a comparison per row, and a change after `now` costs
# a recomputation, never a stale answer. The world row (identity, currency) comes in the same
# statement. Built once: the statement cache then finds it without a walk of a new select.
_purchase_probe = sa_select(
    func.count().label("n"),
    func.coalesce(func.sum(col(Purchase.amount_cents)), 0).label("total"),
    func.min(_PURCHASED_AT).label("first"),
    func.max(_PURCHASED_AT).label("last"),
).subquery()
_VALUES_KEY = (
    sa_select(
        *_purchase_probe.c,
        col(WorldInfo.name),
        col(WorldInfo.source),
        col(WorldInfo.seed),
        type_coerce(col(WorldInfo.epoch), String),
        col(WorldInfo.currency),
    )
    .select_from(_purchase_probe)
    .outerjoin(WorldInfo, col(WorldInfo.id) == 1)
)


# built once, the ids as one parameter (in_param): an expanding IN binds and renders each of a
# storm's ~210 customers on every call
_KNOWN = sa_select(col(Customer.id)).where(in_param(col(Customer.id), "ids"))
# on the table's columns, not the ORM's: the rows come back as the driver's tuples (an ORM row per
# purchase was a third of a cold call); the ORM's autoflush is then the caller's (customer_values)
_purchase = Purchase.__table__  # type: ignore[attr-defined]


_HISTORIES = sa_select(
    _purchase.c.customer_id, type_coerce(_purchase.c.purchased_at, String), _purchase.c.amount_cents
).where(in_param(_purchase.c.customer_id, "ids"), _purchase.c.purchased_at <= bindparam("now"))


def _values_key(session: Session, now: datetime) -> tuple[Any, ...]:
    """What a customer's value depends on besides their id: the database, the world, the histories
    (any purchase loaded, appended, removed or re-priced changes the key) and ``now`` itself."""
    bind = session.get_bind()
    probe = session.execute(_VALUES_KEY).one()
    return (str(getattr(bind, "url", "")), id(bind), *(str(v) for v in probe), now.isoformat())


def customer_values(*, session: Session, customer_ids: list[str], now: datetime) -> dict[str, CustomerValue]:
    """CustomerValue per known customer id (unknown ids are absent; callers decide what that means)."""
    now = aware(now)
    wanted = list(dict.fromkeys(customer_ids))
    if not wanted:
        return {}
    known: list[str] = list(session.execute(_KNOWN, {"ids": wanted}).scalars())
    if not known:
        return {}
    key = _values_key(session, now)
    cached = _values.get(key)
    todo = [cid for cid in known if cid not in cached]
    if todo:
        computed = _compute_values(session=session, customer_ids=todo, now=now)
        _values.put(key, computed)
        cached.update(computed)
    known_set = set(known)
    return {cid: cached[cid] for cid in wanted if cid in known_set and cid in cached}


def _compute_values(*, session: Session, customer_ids: list[str], now: datetime) -> dict[str, CustomerValue]:
    """The model's answer for known customers (each customer's value depends on their own history
    and the population model only, so any subset gives the same per-customer answer)."""
    known = customer_ids
    rows: list[tuple[str, datetime | str, int]] = []
    if session.autoflush:  # as an ORM statement would: pending purchases are part of the history
        session.flush()
    if known:
        rows.extend(session.execute(_HISTORIES, {"ids": known, "now": now}).all())
    model = population_model(session=session, now=now)
    version = model.version
    world = session.get(WorldInfo, 1)
    currency = world.currency if world is not None else "USD"
    out: dict[str, dict[str, Any]] = {}
    if rows:  # customers whose purchases are all after `now` fall through to "no purchases"
        ids, summary = _summarise_rows(rows, now)
        purchases, alive, spend = model.predict(summary.frequency, summary.recency, summary.T, summary.monetary)
        # plain Python floats/ints once per column (tolist) instead of numpy scalars per field
        cols = zip(
            ids,
            purchases.tolist(),
            spend.tolist(),
            alive.tolist(),
            summary.frequency.tolist(),
            summary.recency.tolist(),
            summary.T.tolist(),
            summary.monetary.tolist(),
            strict=True,
        )
        for cid, n12, amt, alv, freq, rec, tenure, monetary in cols:
            value = int(round(n12 * amt))
            out[cid] = {
                "customer_id": cid,
                "tier": tier_for_value(value, model.tier_cuts_cents),
                "expected_purchases_12m": round(n12, 4),
                "expected_value_12m_cents": value,
                "p_alive": round(alv, 4),
                "repurchase_per_month": round(n12 / 12.0, 4),
                "frequency": int(freq),
                "recency_days": round(rec * 7.0, 2),
                "tenure_days": round(tenure * 7.0, 2),
                "avg_order_cents": int(round(monetary)),
                "expected_order_cents": int(round(amt)),
                "currency": currency,
                "model_version": version,
                "model_source": model.source,
            }
    missing = [cid for cid in known if cid not in out]
    if missing:
        new_purchases = float(expected_purchases_new(model.bgnbd, WEEKS_12M))
        mean_spend = model.gamma_gamma.population_mean
        value = int(round(new_purchases * mean_spend))
        for cid in missing:
            out[cid] = {
                "customer_id": cid,
                "tier": tier_for_value(value, model.tier_cuts_cents),
                "expected_purchases_12m": round(new_purchases, 4),
                "expected_value_12m_cents": value,
                "p_alive": 1.0,
                "repurchase_per_month": round(new_purchases / 12.0, 4),
                "frequency": 0,
                "recency_days": 0.0,
                "tenure_days": 0.0,
                "avg_order_cents": 0,
                "expected_order_cents": int(round(mean_spend)),
                "currency": currency,
                "model_version": version,
                "model_source": model.source,
            }
    # one validation call in pydantic-core for every customer (the same checks as a model each)
    return _VALUES.validate_python(out)

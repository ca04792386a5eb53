"""customer_values and the get_customer_value tool: edge cases, world fits, speed, tool errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tools.base import ToolContext
from tools.customers.cdnow import HOLDOUT_END, cdnow_summary, read_cdnow
from tools.customers.get_customer_value import get_customer_value
from tools.customers.value import (
    REFERENCE_MODEL,
    TIER_PERCENTILES,
    clear_cache,
    customer_values,
    fit_population,
    population_model,
)
from tools.models import Customer, Purchase, Tier

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _customer(session: Session, cid: str, purchases: list[tuple[float, int]]) -> None:
    """purchases: (days before NOW, amount in cents)."""
    session.add(Customer(id=cid, name=cid))
    for days_ago, cents in purchases:
        session.add(Purchase(customer_id=cid, purchased_at=NOW - timedelta(days=days_ago), amount_cents=cents))


def _synthetic_world(session: Session, n: int, seed: int = 1) -> None:
    """n customers whose histories follow a BG/NBD-like process (weekly rate ~ Gamma, dropout ~ Beta)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        rate = rng.gamma(0.8, 1 / 4.0)  # purchases per week
        p_drop = rng.beta(1.0, 3.0)
        start = rng.uniform(10, 52) * 7  # days ago
        t, days = 0.0, [start]
        while True:
            t += rng.exponential(1 / rate) * 7
            if t >= start or rng.random() < p_drop:
                break
            days.append(start - t)
        spend = rng.gamma(6.0, 1 / 0.004)  # ~1500 cents
        _customer(session, f"w{i:04d}", [(d, int(rng.gamma(6.0, spend / 6.0))) for d in days])


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def test_edge_cases_small_world_uses_reference(engine: Engine) -> None:
    with Session(engine) as s:
        _customer(s, "none", [])
        _customer(s, "once", [(10, 2500)])
        _customer(s, "sameday", [(20, 1000), (20.01, 3000)])
        _customer(s, "loyal", [(200, 2000), (150, 2000), (100, 2200), (50, 2100), (3, 2400)])
        _customer(s, "lapsed", [(360, 2000), (355, 2000), (350, 2000), (345, 2000)])
        _customer(s, "future", [(-5, 9999)])
        s.commit()
        assert customer_values(session=s, customer_ids=[], now=NOW) == {}
        vals = customer_values(
            session=s, customer_ids=["loyal", "ghost", "none", "once", "sameday", "lapsed", "future"], now=NOW
        )
    assert "ghost" not in vals and list(vals) == ["loyal", "none", "once", "sameday", "lapsed", "future"]
    assert {v.model_source for v in vals.values()} == {"cdnow-reference"}  # 6 customers: too few to fit
    none, once, same, loyal, lapsed = (vals[k] for k in ("none", "once", "sameday", "loyal", "lapsed"))
    assert none.frequency == 0 and none.p_alive == 1.0 and none.expected_value_12m_cents > 0
    assert vals["future"].frequency == 0 and vals["future"].tenure_days == 0  # purchases after now ignored
    assert once.frequency == 0 and once.tenure_days == pytest.approx(10, abs=1)
    assert same.frequency == 0 and same.avg_order_cents == 0  # one day = one purchase
    assert loyal.frequency == 4 and loyal.avg_order_cents == 2175
    assert loyal.recency_days == pytest.approx(197, abs=1) and loyal.tenure_days == pytest.approx(200, abs=1)
    assert loyal.p_alive > 0.8 > 0.5 > lapsed.p_alive
    assert loyal.expected_value_12m_cents > 3 * lapsed.expected_value_12m_cents
    assert loyal.tier in (Tier.gold, Tier.platinum) and lapsed.tier in (Tier.bronze, Tier.silver)
    assert loyal.repurchase_per_month == pytest.approx(loyal.expected_purchases_12m / 12, abs=1e-3)
    for v in vals.values():
        assert v.currency == "USD" and v.model_version.startswith("bgnbd-gg-1:cdnow-reference")
        assert 0 <= v.p_alive <= 1 and v.expected_value_12m_cents >= 0


def test_world_fit_is_used_cached_and_fast(engine: Engine) -> None:
    with Session(engine) as s:
        _synthetic_world(s, 300)
        s.commit()
        ids = [f"w{i:04d}" for i in range(278)]
        first = customer_values(session=s, customer_ids=ids, now=NOW)
        assert len(first) == 278 and {v.model_source for v in first.values()} == {"world"}
        model = population_model(session=s, now=NOW)
        assert model.source == "world" and model.n_customers == 300
        start = time.perf_counter()
        again = customer_values(session=s, customer_ids=ids, now=NOW)
        elapsed = time.perf_counter() - start
        assert again == first
        assert elapsed < 0.25  # a few ms on an idle machine; loose for shared CI runners
        tiers = [v.tier for v in first.values()]
        assert 0.02 < tiers.count(Tier.platinum) / 278 < 0.10
        # a new purchase changes the history: the cache key moves and the customer's value with it
        s.add(Purchase(customer_id="w0000", purchased_at=NOW - timedelta(hours=1), amount_cents=5000))
        s.commit()
        after = customer_values(session=s, customer_ids=["w0000"], now=NOW)["w0000"]
        assert after.frequency == first["w0000"].frequency + 1
        assert population_model(session=s, now=NOW) is not model


def test_reference_constants_rederive_from_cdnow(cdnow_dir: Path) -> None:
    data = read_cdnow(cdnow_dir, "sample")
    refit = fit_population(cdnow_summary(data, in_dollars=False), source="check")
    for got, ref in (
        (refit.bgnbd.as_dict(), REFERENCE_MODEL.bgnbd.as_dict()),
        (refit.gamma_gamma.as_dict(), REFERENCE_MODEL.gamma_gamma.as_dict()),
    ):
        for k in ref:
            assert got[k] == pytest.approx(ref[k], rel=1e-4), k
    full = cdnow_summary(data, calibration_end=HOLDOUT_END, holdout_end=None, in_dollars=False)
    values = REFERENCE_MODEL.values_12m_cents(full)
    cuts = tuple(int(round(float(np.percentile(values, p)))) for p in TIER_PERCENTILES)
    assert cuts == REFERENCE_MODEL.tier_cuts_cents


def test_tool_result_and_errors(engine: Engine) -> None:
    with Session(engine) as s:
        _customer(s, "c1", [(90, 1800), (60, 2000), (30, 2200)])
        s.commit()
        ctx = ToolContext(session=s, now=NOW)
        out = get_customer_value.invoke(ctx, {"customer_id": "c1"})
        assert out["ok"] is True and out["customer_id"] == "c1"
        assert out["inputs"]["frequency"] == 2 and out["inputs"]["avg_order_cents"] == 2100
        assert out["inputs"]["parameters"]["bgnbd"]["r"] == pytest.approx(REFERENCE_MODEL.bgnbd.r)
        assert out["expected_value_12m_cents"] > 0 and out["currency"] == "USD"
        assert out["tier"] in {t.value for t in Tier}
        missing = get_customer_value.invoke(ctx, {"customer_id": "nobody"})
        assert missing["ok"] is False and missing["error"] == "not_found" and "nobody" in missing["message"]
        bad = get_customer_value.invoke(ctx, {"customer_id": "c1", "extra": 1})
        assert bad["ok"] is False and bad["error"] == "invalid_arguments"
    assert not get_customer_value.writes and "12 months" in get_customer_value.description

"""The quote model: deterministic, additive explanations, readable factors, fast batches."""

from __future__ import annotations

import numpy as np
import pytest

from tools.compensation import history as hist
from tools.compensation.features import CompensationFeatures
from tools.compensation.model import CompensationModel, bench_quote_batch, get_model, sample_features


@pytest.fixture(scope="module")
def model() -> CompensationModel:
    return get_model()


def _features(**kw) -> CompensationFeatures:
    base = {
        "delay_minutes": 30.0,
        "order_value_cents": 2_500,
        "customer_value_12m_cents": 20_000,
        "tier": "silver",
        "repurchase_per_month": 1.0,
    }
    return CompensationFeatures(**{**base, **kw})


def test_training_is_deterministic_and_versioned(model):
    again = CompensationModel.train()
    X = hist.generate_history(n=500, seed=11).X
    assert np.array_equal(model.predict_raw(X), again.predict_raw(X))
    assert again.version == model.version and model.version.startswith("comp-lgbm-")
    assert get_model() is model  # cached in-process


def test_model_learned_the_policy_level(model):
    h = hist.generate_history(n=4_000, seed=99)
    err = np.abs(model.predict_raw(h.X) - hist.policy_amount_cents(h.X).clip(0, hist.POLICY_CAP_CENTS))
    assert err.mean() < 60  # cents, against a noise-free target the model never saw


def test_shap_additivity_in_model_space_for_a_batch(model):
    X = hist.generate_history(n=1_000, seed=5).X
    base, phi = model.explain_raw(X)
    raw = model.predict_raw(X)
    assert phi.shape == X.shape
    np.testing.assert_allclose(base + phi.sum(axis=1), raw, rtol=1e-6, atol=1e-6 * max(1.0, abs(base)))
    for q in model.quote(sample_features(n=200, seed=6)):
        e = q.explanation
        total = e.base_value + sum(e.shap_values.values())
        assert total == pytest.approx(e.prediction, rel=1e-6, abs=1e-6)


def test_factors_share_100_percent_with_direction_and_label(model):
    quotes = model.quote(sample_features(n=300, seed=8))
    checked = 0
    for q in quotes:
        factors = q.explanation.top_factors
        if not factors:
            continue
        checked += 1
        assert sum(f.share_pct for f in factors) == pytest.approx(100.0, abs=0.3)
        for f in factors:
            assert f.direction == ("up" if f.shap_value >= 0 else "down")
            assert f.label.endswith("%") and f.share_pct >= 0
        named = [f for f in factors if f.feature != "other"]
        assert [abs(f.shap_value) for f in named] == sorted((abs(f.shap_value) for f in named), reverse=True)
    assert checked > 250


def test_amount_grows_with_delay_and_is_zero_when_on_time(model):
    delays = [0.0, 15.0, 30.0, 60.0]
    quotes = model.quote([_features(delay_minutes=d) for d in delays])
    amounts = [q.amount_cents for q in quotes]
    assert amounts[0] == 0 and quotes[0].kind == "none"
    assert amounts[1] < amounts[2] < amounts[3], amounts
    assert all(a % hist.GRID_CENTS == 0 and 0 <= a <= hist.POLICY_CAP_CENTS for a in amounts)
    late = quotes[3].explanation
    assert late.top_factors[0].feature == "delay_minutes" and late.top_factors[0].direction == "up"
    assert late.top_factors[0].label.startswith("predicted delay +")


def test_kind_rules_and_refund_capped_at_order_value(model):
    coupon, credit, refund, no_refund = model.quote(
        [
            _features(delay_minutes=30),
            _features(delay_minutes=30, tier="platinum", customer_value_12m_cents=150_000),
            _features(delay_minutes=120, order_value_cents=800),
            _features(delay_minutes=120, order_value_cents=800, refund_claims_count=4),
        ]
    )
    assert (coupon.kind, credit.kind, refund.kind) == ("coupon", "credit", "refund")
    assert 0 < refund.amount_cents <= 800
    assert no_refund.kind == "coupon"
    assert credit.amount_cents > coupon.amount_cents  # valued customer gets more


def test_damped_for_customers_with_many_compensations(model):
    fresh, spoiled = model.quote(
        [_features(delay_minutes=40), _features(delay_minutes=40, compensations_count=6, refund_claims_count=2)]
    )
    assert spoiled.amount_cents < fresh.amount_cents
    assert spoiled.explanation.shap_values["compensations_count"] < 0


def test_batch_latency_bound():
    figures = bench_quote_batch(n_orders=278, repeats=5)
    assert figures["median_ms"] < 1_000 and figures["p95_ms"] >= figures["median_ms"]

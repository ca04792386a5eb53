"""BG/NBD on CDNOW: the published fit is reproduced, the likelihood and its gradient are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.customers.bgnbd import (
    BgNbdParams,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    log_likelihood_and_gradient,
    log_likelihood_terms,
    numeric_gradient,
    p_alive,
)
from tools.customers.cdnow import cdnow_summary, read_cdnow
from tools.customers.rfm import Summary

PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


@pytest.fixture(scope="module")
def calibration() -> Summary:
    from tests.conftest import CDNOW_DIR

    return cdnow_summary(read_cdnow(Path(CDNOW_DIR), "sample"))


@pytest.fixture(scope="module")
def fitted(calibration: Summary):
    return fit_bgnbd(calibration.frequency, calibration.recency, calibration.T)


def test_calibration_summary_matches_the_paper(calibration: Summary) -> None:
    assert len(calibration) == 2357
    assert int((calibration.frequency > 0).sum()) == 946
    assert float(calibration.T.max()) == pytest.approx(272 / 7)  # 1997-01-01 .. 1997-09-30 in weeks


def test_parameters_within_2pct_of_published(fitted) -> None:
    got = fitted.params.as_dict()
    for name, ref in PUBLISHED.items():
        assert abs(got[name] - ref) / ref < 0.02, (name, got[name], ref)
    assert fitted.log_likelihood == pytest.approx(-9582.4, abs=0.5)  # the paper's LL
    assert fitted.n_customers == 2357


def test_fit_is_a_stationary_point_and_gradient_is_analytic(calibration: Summary, fitted) -> None:
    x, tx, T = calibration.frequency, calibration.recency, calibration.T
    _ll, grad = log_likelihood_and_gradient(fitted.params, x, tx, T)
    assert np.all(np.abs(grad) < 1e-2)
    away = BgNbdParams(r=0.3, alpha=5.0, a=0.6, b=2.0)
    ll, grad_away = log_likelihood_and_gradient(away, x, tx, T)
    assert ll == pytest.approx(log_likelihood_terms(away, x, tx, T).sum())
    assert np.abs(grad_away).max() > 1.0  # not flat away from the optimum
    np.testing.assert_allclose(grad_away, numeric_gradient(away, x, tx, T), rtol=1e-5)
    assert ll < fitted.log_likelihood


def test_likelihood_stable_for_extreme_histories() -> None:
    params = BgNbdParams(r=0.24, alpha=4.4, a=0.79, b=2.4)
    x = np.array([0.0, 1.0, 500.0, 5000.0])
    tx = np.array([0.0, 0.0, 300.0, 3000.0])
    T = np.array([0.0, 1e-9, 310.0, 3001.0])
    ll = log_likelihood_terms(params, x, tx, T)
    assert np.all(np.isfinite(ll))
    assert np.all(np.isfinite(expected_purchases(params, 52.0, x, tx, T)))


def test_forecasts_behave(fitted) -> None:
    p = fitted.params
    # a one-time buyer is "alive" under BG/NBD; a repeat buyer silent for long is probably not
    assert p_alive(p, [0.0], [0.0], [30.0])[0] == pytest.approx(1.0)
    quiet, recent = p_alive(p, [3.0, 3.0], [5.0, 29.0], [30.0, 30.0])
    assert quiet < 0.5 < recent
    e = expected_purchases(p, np.array([13.0, 26.0, 52.0]), [2.0] * 3, [20.0] * 3, [30.0] * 3)
    assert np.all(np.diff(e) > 0) and e[0] > 0
    # more past purchases at the same recency -> more expected purchases
    lo, hi = expected_purchases(p, 39.0, [1.0, 6.0], [28.0, 28.0], [30.0, 30.0])
    assert hi > lo
    assert 0 < float(expected_purchases_new(p, 39.0)) < 2


def test_fit_refuses_no_customers_and_survives_no_dropout() -> None:
    with pytest.raises(ValueError):
        fit_bgnbd([], [], [])
    rng = np.random.default_rng(0)
    # Poisson buyers who never drop out: the MLE runs to the NBD boundary; the bounded fit stays finite
    T = rng.uniform(20, 40, 400)
    x = rng.poisson(0.3 * T).astype(float)
    tx = np.where(x > 0, T - rng.uniform(0, 0.5, 400), 0.0)
    fit = fit_bgnbd(x, tx, T)
    pred = expected_purchases(fit.params, 10.0, x, tx, T)
    assert np.all(np.isfinite(pred))
    assert pred.mean() == pytest.approx(0.3 * 10.0, rel=0.2)

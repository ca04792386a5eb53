"""Gamma-Gamma spend model on CDNOW's 946 calibration repeat buyers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.customers.cdnow import cdnow_summary, read_cdnow
from tools.customers.gamma_gamma import (
    GammaGammaParams,
    expected_spend,
    fit_gamma_gamma,
    log_likelihood_and_gradient,
    log_likelihood_terms,
)
from tools.customers.rfm import Summary

PUBLISHED = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def calibration() -> Summary:
    from tests.conftest import CDNOW_DIR

    return cdnow_summary(read_cdnow(Path(CDNOW_DIR), "sample"))


@pytest.fixture(scope="module")
def fitted(calibration: Summary):
    return fit_gamma_gamma(calibration.frequency, calibration.monetary)


def test_parameters_within_2pct_of_published(fitted) -> None:
    assert fitted.n_customers == 946
    got = fitted.params.as_dict()
    for name, ref in PUBLISHED.items():
        assert abs(got[name] - ref) / ref < 0.02, (name, got[name], ref)


def test_gradient_vanishes_at_the_fit_and_matches_finite_differences(calibration: Summary, fitted) -> None:
    keep = calibration.frequency > 0
    x, m = calibration.frequency[keep], calibration.monetary[keep]
    _ll, grad = log_likelihood_and_gradient(fitted.params, x, m)
    assert np.abs(grad).max() < 1e-2
    away = GammaGammaParams(p=4.0, q=3.0, gamma=20.0)
    ll, g = log_likelihood_and_gradient(away, x, m)
    h = 1e-6
    numeric = []
    for i in range(3):
        up = np.array([away.p, away.q, away.gamma])
        down = up.copy()
        up[i] += h
        down[i] -= h
        numeric.append(
            (
                log_likelihood_terms(GammaGammaParams(*up), x, m).sum()
                - log_likelihood_terms(GammaGammaParams(*down), x, m).sum()
            )
            / (2 * h)
        )
    np.testing.assert_allclose(g, numeric, rtol=1e-4)
    assert ll < fitted.log_likelihood


def test_fit_is_unit_free(calibration: Summary, fitted) -> None:
    cents = fit_gamma_gamma(calibration.frequency, calibration.monetary * 100)
    assert cents.params.p == pytest.approx(fitted.params.p, rel=1e-4)
    assert cents.params.gamma == pytest.approx(fitted.params.gamma * 100, rel=1e-4)


def test_expected_spend_shrinks_to_the_population_mean(fitted) -> None:
    p = fitted.params
    mean = p.population_mean
    few, many = expected_spend(p, [1.0, 50.0], [100.0, 100.0])
    assert mean < few < many < 100.0
    assert expected_spend(p, [0.0], [0.0])[0] == pytest.approx(mean)
    with pytest.raises(ValueError):
        fit_gamma_gamma([0.0, 1.0], [0.0, 10.0])

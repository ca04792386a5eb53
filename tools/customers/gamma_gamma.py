"""Gamma-Gamma: how much a customer spends per purchase (Fader, Hardie & Lee 2005b; Colombo & Jiang 1999).

Each purchase amount is Gamma(p, nu); a customer's nu is Gamma(q, gamma) across customers. Fitted on
customers with at least one repeat purchase: x = repeat purchases, m = their mean amount. The
likelihood of the mean is closed form; it is evaluated with ``gammaln`` so large x does not overflow.
The conditional expectation shrinks each customer's own mean towards the population mean, more
strongly the fewer purchases they have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def population_mean(self) -> float:
        """E[amount] of a customer we know nothing about (needs q > 1)."""
        return self.p * self.gamma / (self.q - 1) if self.q > 1 else float("nan")


@dataclass(frozen=True)
class GammaGammaFit:
    params: GammaGammaParams
    log_likelihood: float
    n_customers: int
    converged: bool


def log_likelihood_terms(params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike) -> FloatArray:
    """Per-customer log-density of the mean spend ``monetary`` of ``frequency`` purchases."""
    x = np.asarray(frequency, dtype=float)
    m = np.asarray(monetary, dtype=float)
    p, q, g = params.p, params.q, params.gamma
    px = p * x
    return np.asarray(
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(g)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + g),
        dtype=float,
    )


def log_likelihood_and_gradient(
    params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike
) -> tuple[float, NDArray[np.float64]]:
    """Total log-likelihood and its analytic gradient w.r.t. (p, q, gamma)."""
    x = np.asarray(frequency, dtype=float)
    m = np.asarray(monetary, dtype=float)
    p, q, g = params.p, params.q, params.gamma
    px = p * x
    log_xm_g = np.log(x * m + g)
    ll = log_likelihood_terms(params, x, m).sum()
    d_p = (x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - log_xm_g)).sum()
    d_q = (digamma(px + q) - digamma(q) + np.log(g) - log_xm_g).sum()
    d_g = (q / g - (px + q) / (x * m + g)).sum()
    return float(ll), np.array([d_p, d_q, d_g])


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike) -> GammaGammaFit:
    """Maximum-likelihood fit on repeat customers (rows with frequency 0 or spend <= 0 are ignored)."""
    x = np.asarray(frequency, dtype=float)
    m = np.asarray(monetary, dtype=float)
    keep = (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    if len(x) < 2:
        raise ValueError("Gamma-Gamma needs at least two customers with repeat purchases")
    # fit in units of the mean spend so the start point suits cents as well as dollars
    scale = float(np.mean(m))
    ms = m / scale

    def nll(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        params = np.exp(np.clip(theta, -30, 30))
        ll, grad = log_likelihood_and_gradient(GammaGammaParams(*params), x, ms)
        if not np.isfinite(ll) or not np.all(np.isfinite(grad)):
            return 1e300, np.zeros(3)
        return -ll, -grad * params

    best = minimize(nll, np.log([1.0, 2.0, 1.0]), jac=True, method="L-BFGS-B", options={"ftol": 1e-13, "gtol": 1e-8})
    if not best.success:  # a ridge L-BFGS-B gave up on: the simplex does not need gradients
        simplex = minimize(lambda t: nll(t)[0], best.x, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
        best = simplex if simplex.fun < best.fun else best
    p, q, g_s = np.exp(best.x)
    params = GammaGammaParams(p=float(p), q=float(q), gamma=float(g_s * scale))
    ll = float(log_likelihood_terms(params, x, m).sum())
    return GammaGammaFit(params=params, log_likelihood=ll, n_customers=len(x), converged=bool(best.success))


def expected_spend(params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike) -> FloatArray:
    """E[amount of the next purchase | x, m]; the population mean for customers with x = 0."""
    x = np.asarray(frequency, dtype=float)
    m = np.asarray(monetary, dtype=float)
    p, q, g = params.p, params.q, params.gamma
    m = np.where(x > 0, m, 0.0)
    return np.asarray((p * (g + x * m)) / (p * x + q - 1), dtype=float)

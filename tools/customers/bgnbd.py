"""BG/NBD: how often a customer buys and when they silently stop (Fader, Hardie & Lee 2005).

While active, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each
purchase they drop out with probability p ~ Beta(a, b). A customer is summarised by
(x = repeat purchases, t_x = time of the last purchase, T = time since the first purchase), all
measured from the first purchase. The log-likelihood is closed form (equation 6 of the paper) and is
evaluated in log space with ``gammaln``/``logaddexp`` so that customers with many purchases or long
histories do not overflow. Everything is vectorised over customers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import digamma, gammaln, hyp2f1

FloatArray = NDArray[np.float64]

_LOG_BOUND = 9.0  # parameters live in [e^-9, e^9] (after scaling alpha by the longest history)
_BOUNDS = [(-_LOG_BOUND, _LOG_BOUND)] * 4
_LBFGS_OPTIONS = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8}


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class BgNbdFit:
    params: BgNbdParams
    log_likelihood: float  # total over customers, at the optimum
    n_customers: int
    converged: bool


def _arrays(*xs: ArrayLike) -> list[FloatArray]:
    return [np.asarray(x, dtype=float) for x in xs]


def log_likelihood_terms(params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
    """Per-customer log-likelihood of (x, t_x, T) under the BG/NBD."""
    x, t_x, t_obs = _arrays(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    ln_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    ln_a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    ln_a3 = -(r + x) * np.log(alpha + t_obs)
    # the "dropped out right after the last purchase" branch only exists for repeat buyers
    repeat = x > 0
    ln_a4 = np.full_like(x, -np.inf)
    xr = x[repeat]
    ln_a4[repeat] = np.log(a) - np.log(b + xr - 1) - (r + xr) * np.log(alpha + t_x[repeat])
    return ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)


def log_likelihood_and_gradient(
    params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> tuple[float, FloatArray]:
    """Total (weighted) log-likelihood and its analytic gradient w.r.t. (r, alpha, a, b).

    With w3, w4 the posterior weights of the two branches (alive at T / dropped after t_x), each
    derivative is the digamma terms of A1, A2 plus the branch-weighted derivative of A3 or A4.
    """
    x, t_x, t_obs = _arrays(frequency, recency, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = x > 0
    ln_a3 = -(r + x) * np.log(alpha + t_obs)
    ln_a4 = np.full_like(x, -np.inf)
    xr = x[repeat]
    ln_a4[repeat] = np.log(a) - np.log(b + xr - 1) - (r + xr) * np.log(alpha + t_x[repeat])
    mix = np.logaddexp(ln_a3, ln_a4)
    w3, w4 = np.exp(ln_a3 - mix), np.exp(ln_a4 - mix)
    ll = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + gammaln(a + b)
        + gammaln(b + x)
        - gammaln(b)
        - gammaln(a + b + x)
        + mix
    )
    inv_b = np.zeros_like(x)
    inv_b[repeat] = 1.0 / (b + xr - 1)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + t_obs) - w4 * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + t_obs) + w4 / (alpha + t_x))
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x) - w4 * inv_b
    # (w * v).sum() rather than np.dot: a BLAS call spins up threads, which costs more than it saves here
    grad = np.array([(w * d_r).sum(), (w * d_alpha).sum(), (w * d_a).sum(), (w * d_b).sum()])
    return float((w * ll).sum()), grad


def numeric_gradient(params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
    """Central-difference gradient of the total log-likelihood (a check on the analytic one)."""
    theta = np.array([params.r, params.alpha, params.a, params.b])
    grad = np.zeros(4)
    for i in range(4):
        h = 1e-6 * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        f_up = log_likelihood_terms(BgNbdParams(*up), frequency, recency, T).sum()
        f_down = log_likelihood_terms(BgNbdParams(*down), frequency, recency, T).sum()
        grad[i] = (f_up - f_down) / (2 * h)
    return grad


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    start: BgNbdParams | None = None,
) -> BgNbdFit:
    """Maximum-likelihood fit; parameters are optimised on the log scale so they stay positive.

    ``weights`` counts identical (x, t_x, T) rows once each, which keeps large histories fast.
    """
    x, t_x, t_obs = _arrays(frequency, recency, T)
    if len(x) == 0:
        raise ValueError("cannot fit BG/NBD on zero customers")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    # identical (x, t_x, T) rows - most one-time buyers - are evaluated once, weighted
    rows, inverse = np.unique(np.column_stack([x, t_x, t_obs]), axis=0, return_inverse=True)
    w = np.bincount(inverse.ravel(), weights=w, minlength=len(rows))
    x, t_x, t_obs = rows[:, 0], rows[:, 1], rows[:, 2]
    scale = max(float(np.max(t_obs)), 1e-9)
    # fit in units of the longest history so alpha starts near 1 whatever the time unit
    t_x_s, t_obs_s = t_x / scale, t_obs / scale
    s0 = start or BgNbdParams(r=1.0, alpha=1.0 * scale, a=1.0, b=1.0)
    theta0 = np.log([s0.r, s0.alpha / scale, s0.a, s0.b])

    def nll(theta: FloatArray) -> tuple[float, FloatArray]:
        p = np.exp(np.clip(theta, -_LOG_BOUND, _LOG_BOUND))
        ll, grad = log_likelihood_and_gradient(BgNbdParams(*p), x, t_x_s, t_obs_s, w)
        if not np.isfinite(ll) or not np.all(np.isfinite(grad)):
            return 1e300, np.zeros(4)
        return -ll, -grad * p  # chain rule for the log-parameters

    # L-BFGS-B with the analytic gradient, from a few starts (the likelihood has flat ridges on small
    # samples). The bounds keep b finite: when nobody seems to drop out the MLE runs off to a -> 0,
    # b -> inf (the NBD limit), where the forecast formula would cancel catastrophically.
    best = None
    for start_theta in (theta0, np.log([0.5, 0.5, 0.5, 2.0]), np.log([2.0, 2.0, 2.0, 0.5])):
        cand = minimize(nll, start_theta, jac=True, method="L-BFGS-B", bounds=_BOUNDS, options=_LBFGS_OPTIONS)
        if best is None or cand.fun < best.fun - 1e-9:
            best = cand
        if best.success and np.all(np.abs(best.x) < _LOG_BOUND - 1e-3):
            break  # a clean interior optimum: the other starts are for hard cases
    assert best is not None
    res = best
    r, alpha_s, a, b = np.exp(res.x)
    params = BgNbdParams(r=float(r), alpha=float(alpha_s * scale), a=float(a), b=float(b))
    ll_total = float((w * log_likelihood_terms(params, x, t_x, t_obs)).sum())
    return BgNbdFit(params=params, log_likelihood=ll_total, n_customers=int(w.sum()), converged=bool(res.success))


def p_alive(params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
    """P(still active at T | x, t_x, T); one-time buyers are alive with probability 1 under BG/NBD."""
    x, t_x, t_obs = _arrays(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_ratio = (r + x) * (np.log(alpha + t_obs) - np.log(alpha + t_x))
    # x == 0 switches the dropout term off (the paper's delta_{x>0})
    odds = np.where(x > 0, np.exp(np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) + log_ratio), 0.0)
    return 1.0 / (1.0 + odds)


def expected_purchases(
    params: BgNbdParams, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray:
    """E[purchases in (T, T + t] | x, t_x, T] (equation 10 of the paper)."""
    x, t_x, t_obs = _arrays(frequency, recency, T)
    t_arr = np.asarray(t, dtype=float)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t_arr / (alpha + t_obs + t_arr)
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
    tail = np.exp((r + x) * (np.log(alpha + t_obs) - np.log(alpha + t_obs + t_arr)))
    numer = (a + b + x - 1) / (a - 1) * (1.0 - tail * hyp)
    return np.asarray(numer * p_alive(params, x, t_x, t_obs), dtype=float)


def expected_purchases_new(params: BgNbdParams, t: float | ArrayLike) -> FloatArray:
    """E[X(t)] for a customer just acquired (equation 9): used for the population forecast."""
    t_arr = np.asarray(t, dtype=float)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t_arr / (alpha + t_arr)
    return np.asarray(
        (a + b - 1) / (a - 1) * (1.0 - (alpha / (alpha + t_arr)) ** r * hyp2f1(r, b, a + b - 1, z)), dtype=float
    )

"""The compensation quote model: gradient-boosted trees on the policy history, explained with SHAP.

* Amount: a LightGBM regressor predicts the amount in cents directly (identity link), so the model's
  output space is cents and SHAP additivity reads ``base_value + sum(shap_values) == prediction``
  for the raw prediction. The quoted ``amount_cents`` is that prediction clipped to
  ``[0, POLICY_CAP_CENTS]`` ($50; a refund also to the order value) and rounded to the 50-cent grid,
  so it may differ from ``prediction`` by the clip and the rounding, never by more.
* Kind: the written rules of ``history.policy_kind`` (refund for very late orders of customers
  without a refund habit, credit for valuable customers, else coupon), not a learned classifier: a
  rule is easier to audit, and the history's kinds follow it except for dispatcher noise. A quote
  whose amount rounds to zero has kind ``none``.
* Explanation: SHAP TreeExplainer values (tree path dependent, one batch call for all orders); the
  top factors are each feature's share of the total absolute attribution with its direction.
* Determinism: fixed seed, one thread, ``deterministic=True``; the version string hashes the
  training configuration, the history version and seed, and the LightGBM version.

The model is trained lazily on first use (well under a second) and cached in-process.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, TypeAdapter

from tools.compensation import history as hist
from tools.compensation.features import CompensationFeatures

FEATURE_LABELS: dict[str, str] = {
    "delay_minutes": "predicted delay",
    "order_value_cents": "order value",
    "customer_value_12m_cents": "customer 12-month value",
    "tier": "customer tier",
    "repurchase_per_month": "repurchase frequency",
    "complaints_count": "past complaints",
    "compensations_count": "past compensations",
    "refund_claims_count": "refund claims",
    "weather_speed_factor": "weather",
    "channel": "order channel",
}
TOP_FACTORS = 4

# Small trees, few rounds: the policy is smooth and TreeSHAP cost grows with trees x leaves x depth^2.
# On a 5,000-row hold-out, 80 rounds of 7 leaves are 27 cents (MAE) from the noise-free policy against
# 25 cents for 120 rounds, at two thirds of the SHAP cost of a 278-order batch.
TRAIN_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.25,
    "num_leaves": 7,
    "min_data_in_leaf": 40,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}
NUM_ROUNDS = 80
CATEGORICAL = ["channel"]


class Factor(BaseModel):
    feature: str
    label: str  # readable, e.g. "repurchase frequency +18%"
    share_pct: float  # share of the total absolute attribution (all factors sum to ~100)
    direction: Literal["up", "down"]
    shap_value: float  # cents


class Explanation(BaseModel):
    base_value: float  # the model's average output (cents)
    prediction: float  # raw model output (cents) = base_value + sum(shap_values)
    shap_values: dict[str, float]
    top_factors: list[Factor]  # the largest ones, then "other features" so that shares sum to 100
    summary: str


class Quote(BaseModel):
    kind: Literal["coupon", "credit", "refund", "none"]
    amount_cents: int
    explanation: Explanation
    model_version: str


def training_config(*, n_rows: int = hist.DEFAULT_ROWS, seed: int = hist.DEFAULT_SEED) -> dict[str, Any]:
    import lightgbm

    return {
        "params": TRAIN_PARAMS,
        "rounds": NUM_ROUNDS,
        "categorical": CATEGORICAL,
        "features": list(hist.FEATURES),
        "history_version": hist.HISTORY_VERSION,
        "history_rows": n_rows,
        "history_seed": seed,
        "cap_cents": hist.POLICY_CAP_CENTS,
        "grid_cents": hist.GRID_CENTS,
        "lightgbm": lightgbm.__version__,
    }


def model_version(config: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"comp-lgbm-{digest}"


class CompensationModel:
    """A trained booster plus its SHAP explainer; ``quote`` handles a whole batch at once."""

    def __init__(self, booster: Any, config: dict[str, Any]) -> None:
        import shap  # heavy import: only when a model is actually built

        self.booster = booster
        self.config = config
        self.version = model_version(config)
        self.explainer = shap.TreeExplainer(booster)

    @classmethod
    def train(cls, *, n_rows: int = hist.DEFAULT_ROWS, seed: int = hist.DEFAULT_SEED) -> CompensationModel:
        import lightgbm as lgb

        data = hist.generate_history(n=n_rows, seed=seed)
        dataset = lgb.Dataset(
            data.X,
            data.amount_cents.astype(np.float64),
            feature_name=list(hist.FEATURES),
            categorical_feature=CATEGORICAL,
            params={"verbose": -1},
        )
        booster = lgb.train(dict(TRAIN_PARAMS), dataset, num_boost_round=NUM_ROUNDS)
        return cls(booster, training_config(n_rows=n_rows, seed=seed))

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(X), dtype=np.float64)

    def explain_raw(self, X: np.ndarray) -> tuple[float, np.ndarray]:
        """(base value, SHAP matrix n x features) in the model's output space (cents)."""
        phi = np.asarray(self.explainer.shap_values(X), dtype=np.float64)
        return float(np.ravel(self.explainer.expected_value)[0]), phi

    def quote(self, features_list: list[CompensationFeatures]) -> list[Quote]:
        if not features_list:
            return []
        X = np.array([f.to_row() for f in features_list], dtype=np.float64)
        base, phi = self.explain_raw(X)
        # the prediction is the SHAP values' sum plus the base value (local accuracy, exact for a
        # regression booster's raw output): one pass through the trees instead of two
        raw = base + phi.sum(axis=1)
        kinds = hist.policy_kind(X)
        order_value = X[:, hist.FEATURES.index("order_value_cents")]
        cap = np.where(kinds == 2, np.minimum(order_value, hist.POLICY_CAP_CENTS), hist.POLICY_CAP_CENTS)
        amounts = hist.to_grid(raw, cap)
        # shares and ranking for the whole batch at once; the per-row loop only assembles objects.
        # A stable sort of -|phi| puts the zero attributions last, so a row's nonzero features are
        # the first ``nonzero`` of its ranking.
        magnitude = np.abs(phi)
        total = magnitude.sum(axis=1, keepdims=True)
        shares = np.round(100.0 * magnitude / np.where(total > 0, total, 1.0), 1)
        ranks = np.argsort(-magnitude, axis=1, kind="stable")
        nonzero = np.count_nonzero(phi, axis=1)
        rows = []
        columns = zip(
            amounts.tolist(),
            kinds.tolist(),
            raw.tolist(),
            phi.tolist(),
            shares.tolist(),
            ranks.tolist(),
            nonzero.tolist(),
            strict=True,
        )
        for amount, kind_index, prediction, phi_i, shares_i, ranks_i, nonzero_i in columns:
            kind = hist.KINDS[int(kind_index)] if amount > 0 else "none"
            explanation = _explanation(base, prediction, phi_i, shares_i, ranks_i[:nonzero_i], amount, kind)
            rows.append(
                {"kind": kind, "amount_cents": amount, "explanation": explanation, "model_version": self.version}
            )
        # one validation call in pydantic-core for the batch: far cheaper than building objects in Python
        return _QUOTES.validate_python(rows)


_QUOTES = TypeAdapter(list[Quote])


def _explanation(
    base: float,
    prediction: float,
    phi: list[float],
    shares: list[float],
    nonzero: list[int],
    amount: int,
    kind: str,
) -> dict[str, Any]:
    """``nonzero``: the features with a nonzero attribution, largest first."""
    names = hist.FEATURES
    factors: list[dict[str, Any]] = []
    for j in nonzero[:TOP_FACTORS]:
        up = phi[j] > 0
        factors.append(
            {
                "feature": names[j],
                "label": f"{FEATURE_LABELS[names[j]]} {'+' if up else '-'}{shares[j]:.0f}%",
                "share_pct": shares[j],
                "direction": "up" if up else "down",
                "shap_value": round(phi[j], 2),
            }
        )
    rest = nonzero[TOP_FACTORS:]
    if rest:
        rest_phi = sum(phi[j] for j in rest)
        share = round(100.0 - sum(f["share_pct"] for f in factors), 1)
        factors.append(
            {
                "feature": "other",
                "label": f"{len(rest)} other features {share:.0f}%",
                "share_pct": share,
                "direction": "up" if rest_phi >= 0 else "down",
                "shap_value": round(rest_phi, 2),
            }
        )
    lead = ", ".join(f["label"] for f in factors[:3]) or "no feature moved the quote"
    what = "no compensation" if kind == "none" else f"{kind} of {amount / 100:.2f}"
    return {
        "base_value": base,
        "prediction": prediction,
        "shap_values": dict(zip(names, phi, strict=True)),
        "top_factors": factors,
        "summary": f"{what} (model average {base / 100:.2f}); main factors: {lead}",
    }


_model: CompensationModel | None = None
_lock = threading.Lock()


def get_model() -> CompensationModel:
    """The process-wide model, trained on first use."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = CompensationModel.train()
    return _model


def sample_features(*, n: int, seed: int = 1) -> list[CompensationFeatures]:
    """Feature rows drawn like the history (another seed): the bench's and tests' synthetic orders."""
    data = hist.generate_history(n=n, seed=seed)
    return [CompensationFeatures.from_row(row) for row in data.X]


def bench_quote_batch(*, n_orders: int = 278, repeats: int = 30) -> dict[str, float]:
    """Time ``quote`` (prediction + SHAP + factors) for one batch of ``n_orders``; model already trained."""
    model = get_model()
    batch = sample_features(n=n_orders, seed=2)
    model.quote(batch)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.quote(batch)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return {
        "n_orders": n_orders,
        "repeats": repeats,
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(p95, 3),
    }

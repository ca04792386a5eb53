"""Suite metrics: pass^k (tau-bench), calibration error, latency percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np


def pass_hat_k(successes_per_case: Sequence[Sequence[bool]], k: int) -> float:
    """tau-bench's pass^k: the chance that k trials drawn from a case's n trials all pass,
    C(c, k) / C(n, k), averaged over cases. k must not exceed any case's trial count."""
    values = []
    for trials in successes_per_case:
        n, c = len(trials), sum(trials)
        if k > n:
            raise ValueError(f"k={k} exceeds the {n} trials of a case")
        values.append(comb(c, k) / comb(n, k))
    return float(np.mean(values)) if values else 0.0


def expected_calibration_error(confidences: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> float:
    """ECE: the share-weighted gap between mean confidence and pass rate over equal-width bins."""
    if not confidences:
        return 0.0
    conf = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    hit = np.asarray(outcomes, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(conf[mask].mean() - hit[mask].mean())
    return float(ece)


def calibration_bins(
    confidences: Sequence[float], outcomes: Sequence[bool], bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean confidence, pass rate, count) per non-empty bin, for the reliability diagram."""
    conf = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    hit = np.asarray(outcomes, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            out.append((float(conf[mask].mean()), float(hit[mask].mean()), int(mask.sum())))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0

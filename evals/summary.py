"""Aggregate trial results into the suite metrics written to ``--json``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from evals.metrics import expected_calibration_error, pass_hat_k, percentile
from evals.replay import TrialResult


def summarise(results: list[TrialResult], *, trials: int, noop: list[TrialResult] | None = None) -> dict[str, Any]:
    by_case: dict[str, list[TrialResult]] = defaultdict(list)
    for r in results:
        by_case[r.case_id].append(r)
    gated = [s for r in results for s in r.steps if s.executed and s.verdict == "needs_approval"]
    compliance = (sum(s.approved_before_execution for s in gated) / len(gated)) if gated else 1.0
    bad = sum(r.unintended for r in results)
    writes = sum(r.writes for r in results)
    latencies = [r.latency_ms for r in results]
    on_time = [r.on_time_rate for r in results if r.on_time_rate is not None]
    confidences = [r.confidence for r in results if r.confidence is not None]
    outcomes = [r.passed for r in results if r.confidence is not None]
    spent = sum(r.compensation_cents for r in results)
    rescued = rescued_orders(results, noop or [])
    n = min((len(v) for v in by_case.values()), default=trials)
    return {
        "cases": len(by_case),
        "trials": n,
        "pass_hat_k": {
            str(k): pass_hat_k([[t.passed for t in v] for v in by_case.values()], k) for k in range(1, n + 1)
        },
        "approval_gate_compliance": compliance,
        "unintended_write_rate": (bad / writes) if writes else 0.0,
        "policy_invariant_pass_rate": (sum(r.safety_ok for r in results) / len(results)) if results else 1.0,
        "on_time_rate": (sum(on_time) / len(on_time)) if on_time else None,
        "compensation_cents_total": spent,
        "rescued_orders": rescued,
        # None when no order was rescued (or there is no noop run to compare with): the money bought
        # nothing measurable, and a ratio over zero orders would hide that
        "compensation_per_rescued_order_cents": (spent / rescued) if rescued else None,
        "decision_latency_p50_ms": percentile(latencies, 50),
        "decision_latency_p95_ms": percentile(latencies, 95),
        "calibration_ece": expected_calibration_error(confidences, outcomes),
        "llm_tokens": sum(r.tokens for r in results),
        "planner_fallbacks": sum(r.fallback for r in results),
        "errors": sorted({f"{r.case_id}: {r.error}" for r in results if r.error}),
        "latencies_ms": latencies,
        "confidences": confidences,
        "outcomes": outcomes,
        "per_case": [_case_row(cid, v) for cid, v in sorted(by_case.items())],
    }


def rescued_orders(results: list[TrialResult], noop: list[TrialResult]) -> int:
    """Orders rescued, summed over the trials: incident orders a trial delivered on time that the
    noop baseline, on the same case, left late. A case without a noop run rescues none."""
    late_with_noop = {r.case_id: r.incident_orders - r.on_time_orders for r in noop}
    return sum(len(r.on_time_orders & late_with_noop.get(r.case_id, set())) for r in results)


def _case_row(case_id: str, trials: list[TrialResult]) -> dict[str, Any]:
    failed = sorted(
        {f"{c.name} ({c.detail})" if c.detail else c.name for t in trials for c in t.checks if not c.passed}
    )
    on_time = [t.on_time_rate for t in trials if t.on_time_rate is not None]
    return {
        "id": case_id,
        "tags": [],
        "trials": len(trials),
        "passed_trials": sum(t.passed for t in trials),
        "failed_checks": failed,
        "on_time_rate": (sum(on_time) / len(on_time)) if on_time else None,
        "compensation_cents": sum(t.compensation_cents for t in trials) // max(1, len(trials)),
        "latency_ms": percentile([t.latency_ms for t in trials], 50),
        "confidence": trials[0].confidence,
        "approvals": trials[0].approvals,
        "executed": sorted({s.tool for t in trials for s in t.steps if s.executed}),
    }

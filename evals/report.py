"""The eval report: Markdown with matplotlib PNGs (per-case table, pass^k curve, on-time rate against
the baselines, latency histogram, calibration diagram)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evals.metrics import calibration_bins  # noqa: E402


def _pass_k_plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    runs = {result["planner"]: result, **result.get("baselines", {})}
    for name, r in runs.items():
        ks = sorted(int(k) for k in r["pass_hat_k"])
        ax.plot(ks, [r["pass_hat_k"][str(k)] for k in ks], marker="o", label=name)
    ax.set_xlabel("k (trials that must all pass)")
    ax.set_ylabel("pass^k")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _on_time_plot(result: dict[str, Any], path: Path) -> None:
    cases = [c for c in result["per_case"] if c.get("on_time_rate") is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(cases)), 3.6))
    names = [result["planner"], *result.get("baselines", {}).keys()]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        key = "on_time_rate" if name == result["planner"] else f"on_time_{name}"
        values = [c.get(key) or 0.0 for c in cases]
        ax.bar([j + i * width for j in range(len(cases))], values, width=width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))])
    ax.set_xticklabels([c["id"] for c in cases], rotation=75, fontsize=6)
    ax.set_ylabel("on-time rate of incident orders")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(result.get("latencies_ms", []), bins=30, color="#3b6ea5")
    ax.set_xlabel("decision latency (ms): event accepted -> plan persisted, approvals queued")
    ax.set_ylabel("trials")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _calibration_plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4, 4))
    bins = calibration_bins(result.get("confidences", []), result.get("outcomes", []))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    if bins:
        ax.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label=result["planner"])
    ax.set_xlabel("plan confidence")
    ax.set_ylabel("share of trials passing")
    ax.set_title(f"ECE = {result['calibration_ece']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_report(result: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _pass_k_plot(result, directory / "pass_hat_k.png")
    _on_time_plot(result, directory / "on_time.png")
    _latency_plot(result, directory / "latency.png")
    _calibration_plot(result, directory / "calibration.png")
    lines = [
        f"# orderagent eval report: suite `{result['suite']}`, planner `{result['planner']}`",
        "",
        f"{result['cases']} cases x {result['trials']} trials. Command: `{result.get('command', 'orderagent eval')}`",
        "",
        "| metric | " + " | ".join([result["planner"], *result.get("baselines", {}).keys()]) + " |",
        "|---|" + "---|" * (1 + len(result.get("baselines", {}))),
    ]
    runs = [result, *result.get("baselines", {}).values()]
    for key in (
        "pass_hat_1",
        "approval_gate_compliance",
        "unintended_write_rate",
        "policy_invariant_pass_rate",
        "on_time_rate",
        "compensation_per_rescued_order_cents",
        "decision_latency_p50_ms",
        "decision_latency_p95_ms",
        "calibration_ece",
    ):
        vals = [r["pass_hat_k"].get("1") if key == "pass_hat_1" else r.get(key) for r in runs]
        lines.append(f"| {key} | " + " | ".join(_fmt(v) for v in vals) + " |")
    lines += [
        "",
        "![pass^k](pass_hat_k.png) ![calibration](calibration.png)",
        "",
        "![on-time rate](on_time.png)",
        "",
        "![latency](latency.png)",
        "",
        "## Cases",
        "",
        "| case | tags | passed | on-time (agent / noop / greedy) | compensation $ | latency ms | failed checks |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["per_case"]:
        on_time = " / ".join(_fmt(c.get(k)) for k in ("on_time_rate", "on_time_noop", "on_time_greedy"))
        lines.append(
            f"| {c['id']} | {', '.join(c['tags'])} | {c['passed_trials']}/{c['trials']} | {on_time} | "
            f"{c['compensation_cents'] / 100:.2f} | {_fmt(c['latency_ms'])} | {'; '.join(c['failed_checks'][:4])} |"
        )
    path = directory / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path

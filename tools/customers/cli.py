"""`orderagent ltv fit|backtest`: the customer-value model on CDNOW, with the numbers that validate it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tools.customers.bgnbd import fit_bgnbd
from tools.customers.cdnow import CALIBRATION_END, cdnow_summary, read_cdnow
from tools.customers.gamma_gamma import fit_gamma_gamma

# Fader, Hardie & Lee (2005) on the CDNOW sample; the Gamma-Gamma note (946 repeat buyers).
PUBLISHED: dict[str, dict[str, float]] = {
    "bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
    "gamma_gamma": {"p": 6.25, "q": 3.74, "gamma": 15.44},
}


def add_commands(subparsers: Any) -> None:
    ltv = subparsers.add_parser("ltv", help="customer lifetime value model (BG/NBD x Gamma-Gamma) on CDNOW")
    sub = ltv.add_subparsers(dest="ltv_command", required=True)

    fit = sub.add_parser("fit", help="fit on the CDNOW sample's 39-week calibration and compare to the paper")
    fit.add_argument("--cdnow-dir", type=Path, default=None, help="folder with CDNOW_sample.txt")
    fit.add_argument("--json", action="store_true", help="print JSON")
    fit.set_defaults(func=cmd_fit)

    bt = sub.add_parser("backtest", help="39-week holdout forecast errors per customer")
    bt.add_argument("--cdnow-dir", type=Path, default=None, help="folder with the CDNOW files")
    bt.add_argument("--predictions", type=Path, default=None, metavar="FILE.csv", help="write per-customer rows")
    bt.add_argument("--json", action="store_true", help="print JSON")
    bt.set_defaults(func=cmd_backtest)


def _cdnow_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    from agent.settings import get_settings

    return get_settings().data_dir / "cdnow"


def fit_report(cdnow_dir: Path) -> dict[str, Any]:
    data = read_cdnow(cdnow_dir, "sample")
    summary = cdnow_summary(data, holdout_end=None)
    bg = fit_bgnbd(summary.frequency, summary.recency, summary.T)
    gg = fit_gamma_gamma(summary.frequency, summary.monetary)
    fitted = {"bgnbd": bg.params.as_dict(), "gamma_gamma": gg.params.as_dict()}
    deviation = {
        model: {k: round(100.0 * (fitted[model][k] - v) / v, 2) for k, v in ref.items()}
        for model, ref in PUBLISHED.items()
    }
    return {
        "data": str(data.path),
        "setup": (
            f"sample, one purchase per customer per day, weeks, calibration to {CALIBRATION_END}; "
            "Gamma-Gamma on calibration repeat buyers' mean repeat-day spend (dollars)"
        ),
        "n_customers": bg.n_customers,
        "bgnbd": {k: round(v, 4) for k, v in bg.params.as_dict().items()},
        "bgnbd_log_likelihood": round(bg.log_likelihood, 2),
        "gamma_gamma": {k: round(v, 4) for k, v in gg.params.as_dict().items()},
        "gamma_gamma_log_likelihood": round(gg.log_likelihood, 2),
        "gamma_gamma_n_customers": gg.n_customers,
        "published": PUBLISHED,
        "deviation_pct": deviation,
        "max_abs_deviation_pct": max(abs(v) for d in deviation.values() for v in d.values()),
    }


def cmd_fit(args: argparse.Namespace) -> int:
    report = fit_report(_cdnow_dir(args.cdnow_dir))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"CDNOW sample: {report['n_customers']} customers ({report['setup']})")
    bg, gg = report["bgnbd"], report["gamma_gamma"]
    print(
        f"BG/NBD      r={bg['r']:.4f} alpha={bg['alpha']:.4f} a={bg['a']:.4f} b={bg['b']:.4f}"
        f"  LL={report['bgnbd_log_likelihood']:.2f}"
    )
    print(
        f"Gamma-Gamma p={gg['p']:.4f} q={gg['q']:.4f} gamma={gg['gamma']:.4f}"
        f"  LL={report['gamma_gamma_log_likelihood']:.2f}  ({report['gamma_gamma_n_customers']} repeat buyers)"
    )
    print(f"largest deviation from the published parameters: {report['max_abs_deviation_pct']:.2f}%")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from tools.customers.backtest import run_backtest

    report = run_backtest(cdnow_dir=_cdnow_dir(args.cdnow_dir), predictions_csv=args.predictions)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"CDNOW holdout {report['holdout']}, {report['n_customers']} customers; serving: {report['model']}")
    for name, m in report["models"].items():
        print(
            f"  {name:10s} MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  aggregate {m['aggregate_error_pct']:+.2f}%"
            f"  ({m['predicted_total']:.0f} predicted vs {m['actual_total']:.0f} actual)"
        )
    for name, note in report["notes"].items():
        print(f"  {name}: {note}")
    print(f"reference MAE (BG/NBD) <= {report['reference_mae']}; best: {report['best_model']}")
    if "predictions_csv" in report:
        print(f"per-customer predictions: {report['predictions_csv']}")
    return 0

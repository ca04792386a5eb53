"""`orderagent eval`: replay a suite; `eval export`: a recorded incident becomes a case; `eval schema`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.cli import positive_int

PLANNERS = ("playbook", "llm", "greedy", "noop")
GATE_THRESHOLDS = {"approval_gate_compliance": 1.0}


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="replay incident cases through the agent and score them")
    p.add_argument("action", nargs="?", choices=["run", "export", "schema"], default="run")
    p.add_argument("--suite", default="core", help="core | gate | storm | real | all")
    p.add_argument("--planner", default="playbook", choices=list(PLANNERS))
    p.add_argument("--trials", type=positive_int, default=1)
    p.add_argument("--baselines", default="noop,greedy", help="comma-separated, or '' for none")
    p.add_argument("--case", action="append", default=[], help="only these case ids")
    p.add_argument("--json", dest="json_out", nargs="?", const="-", default=None, help="write metrics JSON")
    p.add_argument("--report", default=None, help="write a Markdown report with plots into DIR")
    p.add_argument("--incident", default=None, help="export: the incident id")
    p.add_argument("--db", default=None, help="export: database URL (default: settings)")
    p.add_argument("--out", default=None, help="export: case file to write (default: stdout)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "schema":
        from evals.case import write_schema

        print(write_schema())
        return 0
    if args.action == "export":
        return _export(args)
    from evals.suite import NoCases, run_suite

    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in PLANNERS]
    if unknown:  # a typo would otherwise be scored as the playbook (make_planner's fallback)
        print(f"eval: unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(PLANNERS)}", file=sys.stderr)
        return 2
    try:
        result = run_suite(
            suite=args.suite,
            planner=args.planner,
            trials=args.trials,
            baselines=baselines,
            case_ids=args.case or None,
            progress=not args.quiet,
        )
    except NoCases as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    result["command"] = "orderagent " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["eval"] else "orderagent eval"
    _emit(result, args.json_out)
    if args.report:
        from evals.report import write_report

        path = write_report(result, Path(args.report))
        print(f"report: {path}", file=sys.stderr)
    _print_summary(result)
    return 0 if result["approval_gate_compliance"] >= 1.0 and not result["errors"] else 1


def _emit(result: dict[str, Any], target: str | None) -> None:
    if target is None:
        return
    text = json.dumps(result, indent=2, default=str)
    if target == "-":
        print(text)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")


def _print_summary(result: dict[str, Any]) -> None:
    rows = [(result["planner"], result), *result.get("baselines", {}).items()]
    print(f"{'planner':<10} {'pass^1':>7} {'gate':>6} {'on-time':>8} {'p50 ms':>8}", file=sys.stderr)
    for name, r in rows:
        on_time = r.get("on_time_rate")
        print(
            f"{name:<10} {r['pass_hat_k']['1']:>7.3f} {r['approval_gate_compliance']:>6.2f} "
            f"{(on_time if on_time is not None else float('nan')):>8.3f} {r['decision_latency_p50_ms']:>8.1f}",
            file=sys.stderr,
        )


def _export(args: argparse.Namespace) -> int:
    from evals.export import export_incident

    if not args.incident:
        print("eval export needs --incident ID", file=sys.stderr)
        return 2
    try:
        case = export_incident(incident_id=args.incident, database_url=args.db)
    except LookupError as exc:
        print(f"eval export: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(case, indent=2) + "\n"
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            print(f"eval export: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0

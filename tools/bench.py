"""`orderagent bench`: measured figures of the tools (`bench tools`) or of everything (`bench all`).

`bench tools` reports medians over repeated runs: the riders solver on the `storm` world (latency,
p95, and the gap to the exact MILP optimum of the same model), the compensation quote batch, the
LTV hold-out error, and with ``--mdrp-days N`` the solver dispatcher against the baseline on N
full-size MDRP days: a per-day table (instance, orders, baseline share, solver share, margin, the
on-time counts, the on-time bound and whether the baseline already reaches it) plus min/mean margin
and the counts of wins, ties and losses. The bound (``tools.sim.bound``) counts the orders that any
dispatcher could deliver within the target, given ready times, travel, and where and when couriers
are on shift. `bench` / `bench all` runs ``evals.bench.run(args)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure the tools (bench tools) or everything (bench all)")
    p.add_argument("target", nargs="?", choices=("tools", "all"), default="all")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE", help="JSON to stdout or FILE")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per figure (median reported)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mdrp-days", type=int, default=0, help="also compare dispatchers on N full MDRP days")
    p.add_argument("--skip-exact", action="store_true", help="skip the MILP optimum (no gap figure)")
    p.add_argument(
        "--only",
        default=None,
        metavar="PARTS",
        help=(
            "bench all: comma-separated parts (storm,approval,audit,intake,intake_batched,memory;"
            " only when named: storm_timers, the storm instrumented; storm_instructions, the storm"
            " counted in instructions under valgrind)"
        ),
    )
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.target == "all":
        try:
            from evals import bench as evals_bench
        except ModuleNotFoundError as exc:
            if exc.name not in ("evals.bench", "evals"):
                raise
            sys.stderr.write("bench all: evals.bench is not available yet (evals/bench.py is missing)\n")
            return 2
        return int(evals_bench.run(args) or 0)
    figures = bench_tools(repeats=args.repeats, seed=args.seed, mdrp_days=args.mdrp_days, exact=not args.skip_exact)
    _emit(figures, args.json)
    return 0


def _emit(figures: dict[str, Any], target: str | None) -> None:
    text = json.dumps(figures, indent=2, sort_keys=True, default=str)
    if target is None or target == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(target).write_text(text + "\n", encoding="utf-8")
        sys.stdout.write(f"wrote {target}\n")


def storm_problem(seed: int = 7) -> tuple[list[Any], list[Any], Any, str]:
    """The storm preset's open orders and riders as solver input (an in-memory world)."""
    from sqlmodel import Session

    from tools.db import init_db, make_engine
    from tools.riders.service import PLANNABLE, is_available, solver_input
    from tools.service import list_orders, list_riders, world_now
    from tools.world.generate import generate_world

    engine = make_engine("sqlite://")
    init_db(engine)
    with Session(engine) as session:
        generate_world(session=session, preset="storm", seed=seed)
        session.flush()
        now = world_now(session=session)
        orders = [o for o in list_orders(session=session, statuses=PLANNABLE) if not o.on_hold]
        riders = [r for r in list_riders(session=session) if is_available(r, now)]
        jobs, states, params = solver_input(session=session, orders=orders, riders=riders, now=now)
    engine.dispose()
    return jobs, states, params, "preset:storm"


def solver_figures(jobs: list[Any], states: list[Any], params: Any, repeats: int, exact: bool) -> dict[str, Any]:
    from tools.riders.solver import solve_assignment

    times = []
    sol = None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        sol = solve_assignment(jobs, states, params)
        times.append((time.perf_counter() - t0) * 1000)
    assert sol is not None
    out: dict[str, Any] = {
        "solver_orders": len(jobs),
        "solver_riders": len(states),
        "solver_columns": sol.columns,
        "solver_storm_median_ms": round(float(np.median(times)), 2),
        "solver_storm_p95_ms": round(float(np.percentile(times, 95)), 2),
        "solver_objective": round(sol.objective, 3),
        "solver_assigned": len(sol.planned),
        "solver_unassigned": len(sol.unassigned),
    }
    if exact:
        checked = solve_assignment(jobs, states, params, exact=True, exact_time_limit_s=60.0)
        assert checked.exact is not None
        out.update(
            solver_gap_pct=round(checked.exact.gap_pct, 3),
            solver_milp_optimum=round(checked.exact.optimum, 3),
            solver_lower_bound=round(checked.exact.lower_bound, 3),
            solver_milp_proven_optimal=checked.exact.proven_optimal,
            solver_milp_ms=round(checked.exact.solve_ms, 1),
        )
    return out


def bench_tools(*, repeats: int = 20, seed: int = 7, mdrp_days: int = 0, exact: bool = True) -> dict[str, Any]:
    from agent.settings import get_settings

    settings = get_settings()
    figures: dict[str, Any] = {"repeats": repeats}
    try:
        jobs, states, params, source = storm_problem(seed)
    except ModuleNotFoundError as exc:
        if exc.name != "tools.world.generate":
            raise
        from tools.riders.synthetic import storm_like

        jobs, states, params = storm_like(seed=seed)
        source = "synthetic storm-like (tools.world.generate missing)"
    figures["solver_source"] = source
    figures.update(solver_figures(jobs, states, params, repeats, exact))
    try:
        from tools.compensation.model import bench_quote_batch

        q = bench_quote_batch(n_orders=278, repeats=repeats)
        figures["quote_batch_median_ms"] = q["median_ms"]
        if "p95_ms" in q:
            figures["quote_batch_p95_ms"] = q["p95_ms"]
    except ModuleNotFoundError as exc:
        figures["quote_batch_median_ms"] = None
        figures["quote_batch_missing"] = str(exc)
    try:
        from tools.customers.backtest import run_backtest

        figures["ltv_holdout_mae"] = run_backtest(cdnow_dir=settings.data_dir / "cdnow")["mae"]
    except ModuleNotFoundError as exc:
        figures["ltv_holdout_mae"] = None
        figures["ltv_missing"] = str(exc)
    if mdrp_days > 0:
        figures["mdrp"] = compare_dispatchers(settings.data_dir / "mdrp", days=mdrp_days)
    return figures


def compare_dispatchers(mdrp_dir: Path, *, days: int) -> dict[str, Any]:
    """Share of orders within the target, solver dispatcher vs baseline, on the first N o100 days."""
    from tools.sim.baseline import BaselineDispatcher
    from tools.sim.bound import on_time_bound
    from tools.sim.checker import check_solution
    from tools.sim.engine import Simulation
    from tools.sim.solver_dispatch import SolverDispatcher
    from tools.world.mdrp import read_instance

    rows = []
    for folder in sorted(p for p in mdrp_dir.iterdir() if "o100" in p.name)[:days]:
        inst = read_instance(folder)
        base = Simulation.from_instance(inst, BaselineDispatcher()).run().metrics()
        t0 = time.perf_counter()
        sim = Simulation.from_instance(inst, SolverDispatcher()).run()
        solv = sim.metrics()
        solver_s = round(time.perf_counter() - t0, 2)
        bound = on_time_bound(inst)
        # the solver's run in the MDRP solution format, through the independent feasibility checks
        with tempfile.TemporaryDirectory() as tmp:
            sim.write_solution(Path(tmp) / "solution")
            violations = check_solution(instance_dir=folder, solution_dir=Path(tmp) / "solution")
        rows.append(
            {
                "instance": folder.name,
                "orders": solv["orders_placed"],
                "baseline": base["share_within_target"],
                "solver": solv["share_within_target"],
                "margin": round(solv["share_within_target"] - base["share_within_target"], 4),
                "bound": bound.share,
                "baseline_on_time": base["orders_within_target"],
                "solver_on_time": solv["orders_within_target"],
                "bound_on_time": bound.on_time,
                # orders late whatever the dispatcher: food ready too late / no courier can be there
                "bound_ready_too_late": bound.ready_too_late,
                "bound_no_courier": bound.no_courier_in_time,
                "baseline_at_bound": base["orders_within_target"] >= bound.on_time,
                "solver_day_s": solver_s,
                "violations": len(violations),
            }
        )
        log.info("mdrp_day", **rows[-1])
    margins = [r["margin"] for r in rows]
    beatable = [r for r in rows if not r["baseline_at_bound"]]
    return {
        "days": rows,
        "n_days": len(rows),
        "min_margin": min(margins) if margins else None,
        "mean_margin": round(float(np.mean(margins)), 4) if margins else None,
        "solver_wins": sum(m > 0 for m in margins),
        "ties": sum(m == 0 for m in margins),
        "losses": sum(m < 0 for m in margins),
        "days_with_violations": sum(r["violations"] > 0 for r in rows),
        # days where the baseline already delivers every order that can physically be on time
        "baseline_at_bound_days": len(rows) - len(beatable),
        "solver_wins_where_beatable": sum(r["margin"] > 0 for r in beatable),
        "beatable_days": len(beatable),
    }

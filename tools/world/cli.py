"""`orderagent world generate|load-mdrp|load-cdnow|show` and `orderagent simulate`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tools.world.mdrp import MdrpFormatError


def add_commands(sub: Any) -> None:
    world = sub.add_parser("world", help="load or generate the operational world")
    wsub = world.add_subparsers(dest="world_command", required=True)

    gen = wsub.add_parser("generate", help="generate a preset world (small, storm, large)")
    gen.add_argument("--preset", required=True, choices=["small", "storm", "large"])
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=cmd_generate)

    load = wsub.add_parser("load-mdrp", help="load one Grubhub MDRP instance folder plus the seeded overlay")
    load.add_argument("path", help="instance folder, or an instance name under DATA_DIR/mdrp")
    load.add_argument("--seed", type=int, default=None)
    load.add_argument("--json", action="store_true")
    load.set_defaults(func=cmd_load_mdrp)

    cd = wsub.add_parser("load-cdnow", help="load CDNOW customers and purchases")
    cd.add_argument("path", nargs="?", default=None, help="CDNOW folder or file (default DATA_DIR/cdnow)")
    cd.add_argument("--master", action="store_true", help="the full master file instead of the 1/10 sample")
    cd.add_argument("--json", action="store_true")
    cd.set_defaults(func=cmd_load_cdnow)

    show = wsub.add_parser("show", help="counts and clock of the loaded world")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    sim = sub.add_parser("simulate", help="run a whole MDRP day with a dispatcher and print its metrics")
    sim.add_argument("--mdrp", required=True, help="instance folder, or an instance name under DATA_DIR/mdrp")
    sim.add_argument("--dispatcher", choices=["baseline", "solver"], default="baseline")
    sim.add_argument("--out", default=None, help="write the run in the MDRP solution format here")
    sim.add_argument("--check", action="store_true", help="check the written solution (needs --out)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--json", action="store_true")
    sim.set_defaults(func=cmd_simulate)


def resolve_mdrp(path: str) -> Path:
    """A folder as given, or else an instance name under DATA_DIR/mdrp."""
    p = Path(path)
    if p.exists():
        return p
    from agent.settings import get_settings

    candidate = get_settings().data_dir / "mdrp" / path
    return candidate if candidate.exists() else p


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for k, v in data.items():
            print(f"{k}: {v}")


def _engine() -> Any:
    from tools.db import get_engine

    return get_engine()


def _seed(value: int | None) -> int:
    if value is not None:
        return value
    from agent.settings import get_settings

    return get_settings().seed


def cmd_generate(args: argparse.Namespace) -> int:
    from tools.db import session_scope
    from tools.world.generate import generate_world

    t0 = time.perf_counter()
    with session_scope(_engine()) as session:
        world = generate_world(session=session, preset=args.preset, seed=_seed(args.seed))
    out = {
        "preset": args.preset,
        **world.counts,
        "events": len(world.events),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    _emit(out, args.json)
    return 0


def cmd_load_mdrp(args: argparse.Namespace) -> int:
    from tools.db import session_scope
    from tools.world.mdrp import load_mdrp

    t0 = time.perf_counter()
    try:
        with session_scope(_engine()) as session:
            counts = load_mdrp(session=session, path=resolve_mdrp(args.path), seed=_seed(args.seed))
    except MdrpFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _emit({**counts, "seconds": round(time.perf_counter() - t0, 3)}, args.json)
    return 0


def cmd_load_cdnow(args: argparse.Namespace) -> int:
    from tools.customers.cdnow import load_cdnow_customers  # H3's loader, imported when used
    from tools.db import session_scope
    from tools.state_machine import DomainError

    if args.path is None:
        from agent.settings import get_settings

        path = get_settings().data_dir / "cdnow"
    else:
        path = Path(args.path)
    t0 = time.perf_counter()
    try:
        with session_scope(_engine()) as session:
            counts = load_cdnow_customers(session=session, path=path, which="master" if args.master else "sample")
    except (ValueError, DomainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _emit({**counts, "seconds": round(time.perf_counter() - t0, 3)}, args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from tools.db import session_scope
    from tools.world.service import world_summary

    with session_scope(_engine()) as session:
        summary = world_summary(session=session)
    _emit(summary, args.json)
    return 0


def make_dispatcher(name: str) -> Any:
    if name == "solver":
        from tools.sim.solver_dispatch import SolverDispatcher  # H2's dispatcher, imported when used

        return SolverDispatcher()
    from tools.sim.baseline import BaselineDispatcher

    return BaselineDispatcher()


def cmd_simulate(args: argparse.Namespace) -> int:
    from tools.sim.engine import Simulation
    from tools.world.mdrp import read_instance

    try:
        inst = read_instance(resolve_mdrp(args.mdrp))
    except MdrpFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    sim = Simulation.from_instance(inst, make_dispatcher(args.dispatcher), seed=args.seed).run()
    metrics = sim.metrics()
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    if args.out:
        out = sim.write_solution(args.out)
        metrics["solution_dir"] = str(out)
        if args.check:
            from tools.sim.checker import check_solution

            problems = check_solution(instance_dir=inst.path, solution_dir=out)
            metrics["violations"] = len(problems)
            metrics["violation_examples"] = problems[:5]
    _emit(metrics, args.json)
    return 0 if not metrics.get("violations") else 1

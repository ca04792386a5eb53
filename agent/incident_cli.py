"""`orderagent incident run --preset storm [--seed N] [--db URL] [--planner P] [--json]`.

Builds the preset's world in a fresh database (default: a new SQLite file under var/), ingests its
reference events, runs the incident end to end and prints the plan, the verdicts, what executed,
what waits for approval and where the audit is. ``elapsed_ms`` runs from the events being accepted
to the plan persisted, approvals queued and audit written (the graph's ``assess`` node committed);
``total_ms`` also includes executing the allowed steps. The compensation model is trained before the
clock starts (once per process, as in the service).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.cli import non_negative_int
from agent.settings import PROJECT_ROOT, get_settings


def add_commands(sub: Any) -> None:
    p = sub.add_parser("incident", help="run an incident end to end on a generated world")
    isub = p.add_subparsers(dest="incident_command", required=True)
    run = isub.add_parser("run", help="generate a preset world, ingest its events, run the incident")
    run.add_argument("--preset", default="storm", choices=["small", "storm", "large"])
    run.add_argument("--seed", type=non_negative_int, default=None, help="world seed (default: settings.seed)")
    run.add_argument(
        "--db",
        default=None,
        help="URL of a new database (refused if it holds a world; default: a fresh SQLite file under var/)",
    )
    run.add_argument("--planner", default=None, choices=["playbook", "llm", "greedy", "noop"])
    run.add_argument("--json", action="store_true", help="print one JSON document")
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from audit.logging import configure_logging

    configure_logging(stream=sys.stderr)  # stdout carries only the result (JSON stays parseable)
    try:
        result = run_preset(preset=args.preset, seed=args.seed, db_url=args.db, planner=args.planner)
    except WorldExists as exc:
        sys.stderr.write(f"orderagent: {exc}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        print_human(result)
    return 0 if not result.get("error") else 1


class WorldExists(RuntimeError):
    """``--db`` names a database that holds a world already: a preset is never generated over it."""


def run_preset(
    *, preset: str, seed: int | None = None, db_url: str | None = None, planner: str | None = None
) -> dict[str, Any]:
    from agent.planners.base import Planner
    from agent.runtime import AgentRuntime, make_planner
    from agent.warmup import freeze_warm_heap, warm_models
    from tools.clock import FakeClock
    from tools.db import init_db, make_engine, session_scope
    from tools.models import WorldInfo
    from tools.service import world_now
    from tools.world.generate import generate_world

    settings = get_settings()
    seed = settings.seed if seed is None else seed
    if db_url is None:
        var = PROJECT_ROOT / "var"
        var.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"incident-{preset}-", dir=var))
        db_url = f"sqlite:///{tmp / 'orderagent.db'}"
    engine = make_engine(db_url)
    init_db(engine)
    with session_scope(engine) as s:
        if s.get(WorldInfo, 1) is not None:
            # a service's database, or an earlier run's: generating into it would mix two worlds
            engine.dispose()
            raise WorldExists(f"{_redact(db_url)} holds a world already; give a new database or omit --db")
        world = generate_world(session=s, preset=preset, seed=seed)
    with session_scope(engine) as s:
        now = world_now(session=s)
    warm_models(engine=engine, now=now)
    freeze_warm_heap()
    chosen: Planner = make_planner(settings, planner)
    watch = Stopwatch()
    rt = AgentRuntime(engine=engine, settings=settings, clock=FakeClock(now), planner=chosen, on_assessed=watch.mark)
    try:
        watch.start()
        ingested = rt.ingest(world.events)
        incident_ids = list(dict.fromkeys(r.incident_id for r in ingested))
        outcomes = [rt.run_incident(iid) for iid in incident_ids]
        total_ms = watch.since_start()
        views = [rt.incident_view(iid) for iid in incident_ids]
    finally:
        rt.close()
    first = views[0] if views else {}
    return {
        "preset": preset,
        "seed": seed,
        "database": _redact(db_url),
        "events": len(world.events),
        "incidents": incident_ids,
        "incident_id": first.get("id"),
        "status": first.get("status"),
        "planner": (first.get("plan") or {}).get("planner"),
        "model": {
            k: (first.get("plan") or {}).get(k)
            for k in ("model_provider", "model_name", "model_version", "prompt_version")
        },
        "fallback_reason": (first.get("plan") or {}).get("fallback_reason"),
        "plan_confidence": (first.get("plan") or {}).get("confidence"),
        "summary": first.get("summary"),
        "steps": _steps(first),
        "pending_approvals": _pending(first),
        "executed": len([e for e in first.get("executed", []) if e["status"] == "succeeded"]),
        "elapsed_ms": round(watch.first_mark_ms or total_ms, 1),
        "total_ms": round(total_ms, 1),
        "audit": f"{_redact(db_url)} (table decisionrecord; verify: orderagent audit verify --database-url <url>)",
        "error": next((o.error for o in outcomes if o.error), None)
        or next((f"{o.incident_id}: run lease held by another process" for o in outcomes if o.held_elsewhere), None),
    }


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = 0.0
        self.first_mark_ms: float | None = None

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def since_start(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def mark(self) -> None:
        if self.first_mark_ms is None:
            self.first_mark_ms = self.since_start()


def _steps(view: dict[str, Any]) -> list[dict[str, Any]]:
    plan = view.get("plan") or {}
    out = []
    for st in plan.get("steps", []):
        i = str(st["index"])
        verdict = (view.get("verdicts") or {}).get(i, {})
        out.append(
            {
                "index": st["index"],
                "tool": st["tool"],
                "args": st["args"],
                "confidence": st["confidence"],
                "verdict": verdict.get("decision"),
                "reasons": [r.get("code") for r in verdict.get("reasons", [])],
                "status": (view.get("step_status") or {}).get(i),
            }
        )
    return out


def _pending(view: dict[str, Any]) -> dict[str, Any] | None:
    payload = view.get("waiting_for_approval")
    if not payload:
        return None
    return {
        "request_id": payload["request_id"],
        "expires_at": payload.get("expires_at"),
        "steps": [s["index"] for s in payload.get("steps", [])],
        "count": len(payload.get("steps", [])),
    }


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def print_human(r: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"incident {r['incident_id']} ({r['preset']}, seed {r['seed']}): {r['status']}\n")
    w(f"planner {r['planner']} / {r['model'].get('model_name')}  confidence {r['plan_confidence']}\n")
    if r.get("fallback_reason"):
        w(f"fallback: {r['fallback_reason']}\n")
    w(f"{r['summary']}\n\n")
    counts: dict[tuple[str, str, str], int] = {}
    for st in r["steps"]:
        key = (st["tool"], str(st["verdict"]), str(st["status"]))
        counts[key] = counts.get(key, 0) + 1
    w("steps by tool / verdict / status:\n")
    for (tool, verdict, status), n in sorted(counts.items()):
        w(f"  {n:4d} x {tool:20s} {verdict:15s} {status}\n")
    p = r.get("pending_approvals")
    if p:
        w(f"\nwaiting for approval: request {p['request_id']} ({p['count']} steps, expires {p['expires_at']})\n")
    w(f"\nexecuted {r['executed']} steps; elapsed {r['elapsed_ms']} ms (events -> plan, verdicts, queue, audit)")
    w(f"; total {r['total_ms']} ms\naudit: {r['audit']}\n")
    if r.get("error"):
        w(f"error: {r['error']}\n")

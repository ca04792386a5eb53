"""`orderagent bench`: the speed of the whole loop on this machine, medians over repeated runs.

- storm end to end: the reference storm's events accepted -> plan persisted, approvals queued, audit
  written (playbook planner, models warm; each repetition on a fresh copy of the same world);
- event intake over HTTP on loopback with the service running in its own process (bounded count/time);
- approval decision -> step executed (a refund waiting for a supervisor);
- audit chain verification throughput;
- peak memory (RSS) of a service process with the `large` preset loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial, wraps
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

from agent.settings import get_settings
from agent.warmup import freeze_warm_heap
from evals.metrics import percentile
from tools.clock import FakeClock
from tools.customers.value import clear_world_caches
from tools.db import init_db, make_engine
from tools.service import world_now


def _reset_world(template: Path, target: Path, engine: Any) -> None:
    """Put a fresh copy of the world at ``target``: the engine's connections are closed first (and its
    statement cache kept, as in a running service), the old WAL and checkpoints removed."""
    engine.dispose()
    for path in target.parent.glob(target.name + "*"):
        path.unlink()
    for path in target.parent.glob(target.stem + ".checkpoints*"):
        path.unlink()
    shutil.copyfile(template, target)


def _stage_times(engine: Any, incident_ids: list[str]) -> dict[str, float]:
    """Wall-clock time (epoch seconds) of each graph stage's audit record, earliest per stage."""
    from sqlmodel import col, select

    from audit.models import DecisionRecord

    out: dict[str, float] = {}
    with Session(engine) as s:
        rows = s.exec(
            select(DecisionRecord.stage, DecisionRecord.recorded_at).where(
                col(DecisionRecord.incident_id).in_(incident_ids)
            )
        ).all()
    for stage, at in rows:
        ts = at.timestamp()
        out[stage] = min(out.get(stage, ts), ts)
    return out


# what `bench --only storm_timers` times inside the storm's span (module, attribute): every read
# tool (by name, through Tool.invoke) and these calls. Inclusive and overlapping: customer values are
# inside the compensation quotes' tool and the assessment's facts, the solver inside its tool.
TIMED_CALLS: tuple[tuple[str, str], ...] = (
    ("agent.incidents", "ingest_events"),
    ("tools.riders.solver", "solve_assignment"),
    ("tools.customers.value", "customer_values"),
    ("tools.compensation.model", "CompensationModel.quote"),
    ("agent.planners.playbook", "PlaybookPlanner.plan"),
    ("guardrails.validation", "build_assess_context"),
    ("guardrails.policy", "assess_plan"),
    ("guardrails.service", "create_approval_request"),
    ("audit.service", "append_record"),
)


class _Timers:
    """Wall-clock totals of ``TIMED_CALLS`` and of each tool, per storm run, while installed: each
    function is replaced by a timing wrapper in its module, in every module that imported it by name,
    and restored on exit. A profiler's view without a profiler's overhead on every call."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.runs: dict[str, list[float]] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, fn: Callable[..., Any], key: Callable[..., str]) -> Callable[..., Any]:
        """``fn`` timed into ``totals[key(*args)]``."""
        totals = self.totals

        @wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                name = key(*a)
                totals[name] = totals.get(name, 0.0) + (time.perf_counter() - t0) * 1000

        return timed

    def _install(self, holder: Any, name: str, wrapped: Callable[..., Any]) -> None:
        self._undo.append((holder, name, getattr(holder, name)))
        setattr(holder, name, wrapped)

    def __enter__(self) -> _Timers:
        import importlib

        from tools.base import Tool

        self._install(Tool, "invoke", self._wrap(Tool.invoke, lambda tool, *_: f"tool {tool.name}"))
        for module_name, attr in TIMED_CALLS:
            owner: Any = importlib.import_module(module_name)
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            fn = getattr(owner, name)
            wrapped = self._wrap(fn, lambda *_, name=name: name)
            # a method is looked up on its class; a function also where it was imported by name
            holders = [owner] if path else [m for m in list(sys.modules.values()) if getattr(m, name, None) is fn]
            for holder in holders:
                self._install(holder, name, wrapped)
        return self

    def __exit__(self, *exc: object) -> None:
        for holder, name, fn in reversed(self._undo):
            setattr(holder, name, fn)
        self._undo.clear()

    def start_run(self) -> None:
        self.totals.clear()

    def keep_run(self, totals: dict[str, float]) -> None:
        for key, ms in totals.items():
            self.runs.setdefault(key, []).append(ms)

    def medians(self, runs: int) -> dict[str, float]:
        """Median per call over ``runs`` runs (a run that never made the call counts 0 ms), largest first."""
        med = {k: statistics.median(v + [0.0] * (runs - len(v))) for k, v in self.runs.items()}
        return {k: round(m, 2) for k, m in sorted(med.items(), key=lambda km: -km[1])}


def bench_storm_timers(*, repeats: int = 20, seed: int = 7) -> dict[str, Any]:
    """The storm's span again with ``_Timers`` installed: where the milliseconds go (the wrappers
    cost a little; ``storm_timers_e2e_median_ms`` is this run's own median for comparison)."""
    with _Timers() as timers:
        out = bench_storm(repeats=repeats, seed=seed, timers=timers)
    return {
        "storm_timers_e2e_median_ms": out["storm_e2e_median_ms"],
        "storm_timers_ms": timers.medians(out["storm_e2e_runs"]),
    }


def storm_template(folder: Path, seed: int) -> tuple[Path, list[Any], datetime]:
    """The reference storm's world in ``folder/template.db`` (each run copies it), its events, its now."""
    from tools.world.generate import generate_world

    template = folder / "template.db"
    engine = make_engine(f"sqlite:///{template}")
    init_db(engine)
    with Session(engine, expire_on_commit=False) as s:
        events = list(generate_world(session=s, preset="storm", seed=seed).events)
        s.commit()
        start = world_now(session=s)
    engine.dispose()
    return template, events, start


def bench_storm(*, repeats: int = 20, seed: int = 7, timers: _Timers | None = None) -> dict[str, Any]:
    """Events accepted -> plan persisted, approvals queued, verdict/approval audit written.

    The clock stops when the graph's ``assess`` node has committed the plan's verdicts, the approval
    request and their audit records (``on_assessed``); the run then goes on to execute the allowed
    steps, timed separately as ``storm_execute_ms``. Stage figures come from the audit records'
    wall-clock times (no instrumentation inside the graph): ingest, intake+investigate, plan, assess.
    With ``timers`` (``bench_storm_timers``), the timed calls' totals up to that moment are kept too.
    """
    from agent.runtime import AgentRuntime, make_planner

    settings = get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        template, events, start = storm_template(Path(tmp), seed)
        cols: dict[str, list[float]] = {
            k: [] for k in ("e2e", "execute", "total", "ingest", "investigate", "plan", "assess")
        }
        executed: list[int] = []
        # One engine for every run, as a service has: its compiled-statement cache stays warm. Each
        # run gets a fresh copy of the world under it, and nothing derived from the world's data is
        # kept from one run to the next (customer values); the fitted models are, as in a service.
        run_db = Path(tmp) / "run.db"
        url = f"sqlite:///{run_db}"
        eng = make_engine(url)
        run_settings = settings.model_copy(update={"database_url": url, "planner": "playbook"})
        for i in range(repeats + 2):  # the first two warm the models and caches
            if i == 2:
                # as the service does after loading its models: the warm heap (~400k objects) leaves the
                # collector's generations, so full collections stop walking it inside timed runs
                freeze_warm_heap()
            _reset_world(template, run_db, eng)
            clear_world_caches()
            assessed: list[float] = []
            at_assessed: dict[str, float] = {}

            def on_assessed(marks: list[float] = assessed, snap: dict[str, float] = at_assessed) -> None:
                marks.append(time.perf_counter())
                if timers is not None:
                    snap.clear()
                    snap.update(timers.totals)

            rt = AgentRuntime(
                engine=eng,
                settings=run_settings,
                clock=FakeClock(start),
                planner=make_planner(run_settings, "playbook"),
                on_assessed=on_assessed,
            )
            if timers is not None:
                timers.start_run()
            wall0 = time.time()
            t0 = time.perf_counter()
            ids = sorted({r.incident_id for r in rt.ingest(events)})
            t_ingested = time.perf_counter()
            outcomes = [rt.run_incident(iid) for iid in ids]
            t_done = time.perf_counter()
            rt.close()
            if len(assessed) != len(ids) or any(o.error for o in outcomes):
                raise RuntimeError(f"storm run {i} did not assess every incident: {[o.error for o in outcomes]}")
            if not any(o.request_id for o in outcomes):
                raise RuntimeError(f"storm run {i} queued no approval request")
            stages = _stage_times(eng, ids)
            with Session(eng) as s:
                from sqlmodel import col, select

                from agent.models import ExecutedStep

                n_exec = len(
                    s.exec(select(ExecutedStep.idempotency_key).where(col(ExecutedStep.incident_id).in_(ids))).all()
                )
            if i >= 2:
                e2e = (assessed[-1] - t0) * 1000  # the last incident's assess committed
                cols["e2e"].append(e2e)
                cols["execute"].append((t_done - assessed[-1]) * 1000)
                cols["total"].append((t_done - t0) * 1000)
                cols["ingest"].append((t_ingested - t0) * 1000)
                # audit record times: intake/investigation/proposal are written inside their nodes
                wall_assessed = wall0 + (assessed[-1] - t0)
                wall_ingested = wall0 + (t_ingested - t0)
                if {"investigation", "proposal"} <= stages.keys():
                    cols["investigate"].append((stages["investigation"] - wall_ingested) * 1000)
                    cols["plan"].append((stages["proposal"] - stages["investigation"]) * 1000)
                    cols["assess"].append((wall_assessed - stages["proposal"]) * 1000)
                executed.append(n_exec)
                if timers is not None:
                    timers.keep_run(at_assessed)
        eng.dispose()
    out: dict[str, Any] = {
        "storm_e2e_median_ms": statistics.median(cols["e2e"]),
        "storm_e2e_p95_ms": percentile(cols["e2e"], 95),
        "storm_e2e_runs": len(cols["e2e"]),
        "storm_execute_ms": statistics.median(cols["execute"]),
        "storm_execute_steps": statistics.median(executed) if executed else 0,
        "storm_total_ms": statistics.median(cols["total"]),
        "storm_ingest_ms": statistics.median(cols["ingest"]),
    }
    for k in ("investigate", "plan", "assess"):
        if cols[k]:
            out[f"storm_{k}_ms"] = statistics.median(cols[k])
    out["load_average_1m"] = os.getloadavg()[0]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_intake(*, events: int = 3000, seconds: float = 30.0, clients: int = 4, batch: int = 1) -> dict[str, Any]:
    """POST /events from a few keep-alive clients to a service in its own process, ``batch`` events per
    request (1: one event per request)."""
    from agent.api.service import create_token
    from tools.world.generate import generate_world

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'intake.db'}"
        engine = make_engine(url)
        init_db(engine)
        with Session(engine, expire_on_commit=False) as s:
            generate_world(session=s, preset="small", seed=1)
            _, token = create_token(session=s, name="bench", role="integration")
            s.commit()
            now = world_now(session=s)
        engine.dispose()
        port = _free_port()
        env = {**os.environ, "DATABASE_URL": url, "ORDERAGENT_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "agent.api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("the service did not come up for the intake benchmark")
            sent = [0] * clients
            errors = [0] * clients
            stop_at = time.monotonic() + seconds

            def client(k: int) -> None:
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
                    mine = list(range(k, events, clients))
                    for start in range(0, len(mine), batch):
                        if time.monotonic() > stop_at:
                            return
                        body = [
                            {
                                "id": f"bench-{i}",
                                "type": "order_late_risk",
                                "occurred_at": now.isoformat(),
                                "zone": "bench",
                                "source": "bench",
                                "payload": {"n": i},
                            }
                            for i in mine[start : start + batch]
                        ]
                        try:
                            r = c.post("/events", json=body if batch > 1 else body[0])
                        except httpx.HTTPError:
                            errors[k] += len(body)  # counted, not fatal: the stored-events check tells
                            continue
                        if r.status_code == 202:
                            sent[k] += len(body)
                        else:
                            errors[k] += len(body)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            settled = _wait_until_planned(url, timeout_s=60)
        finally:
            server.terminate()
            server.wait(timeout=10)
        stored, incidents, failed = _intake_outcome(url)
    if stored < sum(sent):
        raise RuntimeError(f"intake accepted {sum(sent)} events but stored {stored}")
    if failed:
        raise RuntimeError(f"{failed} incidents opened by the intake load failed")
    return {
        "intake_events_per_s": sum(sent) / elapsed,
        "intake_batch": batch,
        "intake_events": sum(sent),
        "intake_errors": sum(errors),
        "intake_clients": clients,
        # every accepted event is stored, and every incident they opened or joined was run after
        # the load (``intake_settle_s`` after the last response, by the service's background worker)
        "intake_stored_events": stored,
        "intake_incidents": incidents,
        "intake_settle_s": settled,
    }


def _intake_outcome(url: str) -> tuple[int, int, int]:
    """Events stored, incidents, incidents whose run failed."""
    from sqlmodel import col, func, select

    from agent.models import Incident, IncidentEvent, IncidentStatus

    engine = make_engine(url)
    try:
        with Session(engine) as s:
            stored = s.exec(select(func.count()).select_from(IncidentEvent)).one()
            incidents = s.exec(select(func.count(col(Incident.id)))).one()
            failed = s.exec(
                select(func.count(col(Incident.id))).where(col(Incident.status) == IncidentStatus.failed.value)
            ).one()
        return int(stored), int(incidents), int(failed)
    finally:
        engine.dispose()


def _wait_until_planned(url: str, timeout_s: float) -> float:
    """Seconds until no incident is left open or being investigated (the worker has run them all)."""
    from sqlmodel import col, func, select

    from agent.models import Incident, IncidentStatus

    engine = make_engine(url)
    t0 = time.monotonic()
    waiting = [IncidentStatus.open.value, IncidentStatus.investigating.value]
    try:
        while True:
            with Session(engine) as s:
                left = s.exec(select(func.count()).where(col(Incident.status).in_(waiting))).one()
            if not left:
                return round(time.monotonic() - t0, 2)
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"{left} incidents still unplanned {timeout_s} s after the intake load")
            time.sleep(0.05)
    finally:
        engine.dispose()


def _bench_intake_batched() -> dict[str, Any]:
    out = bench_intake(events=6000, batch=50)
    return {"intake_batch50_events_per_s": out["intake_events_per_s"], "intake_batch50_errors": out["intake_errors"]}


def bench_approval(*, repeats: int = 10) -> dict[str, Any]:
    """Time runtime.decide(approve) of a waiting refund until the refund has executed."""
    from agent.models import ExecutedStep
    from agent.runtime import AgentRuntime, make_planner
    from evals.case import CASES_DIR, load_case
    from evals.scenario import build_world, case_events, resolve_bindings
    from guardrails.models import ApprovalStep

    case = load_case(CASES_DIR / "stockout-refund.json")
    settings = get_settings()
    times = []
    for i in range(repeats + 1):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'appr.db'}"
            eng = make_engine(url)
            init_db(eng)
            with Session(eng, expire_on_commit=False) as s:
                preset = build_world(session=s, case=case, data_dir=Path(settings.data_dir))
                bound = resolve_bindings(session=s, bind=case.bind)
                events = case_events(session=s, case=case, bound=bound, preset_events=preset, trial=i)
                start = world_now(session=s)
            run_settings = settings.model_copy(update={"database_url": url})
            rt = AgentRuntime(
                engine=eng,
                settings=run_settings,
                clock=FakeClock(start),
                planner=make_planner(run_settings, "playbook"),
            )
            iid = rt.ingest(events)[0].incident_id
            out = rt.run_incident(iid)
            if out.request_id is None:
                raise RuntimeError("the refund case did not queue an approval")
            with Session(eng) as s:
                from sqlmodel import select

                pending = [
                    a
                    for a in s.exec(select(ApprovalStep).where(ApprovalStep.request_id == out.request_id))
                    if str(a.status) == "pending"
                ]
            t0 = time.perf_counter()
            for a in pending:
                rt.decide(
                    request_id=out.request_id,
                    step_index=a.step_index,
                    decision="approve",
                    actor_id="bench-sup-1",
                    actor_role="supervisor",
                )
                if a.approvals_required >= 2:
                    rt.decide(
                        request_id=out.request_id,
                        step_index=a.step_index,
                        decision="approve",
                        actor_id="bench-sup-2",
                        actor_role="supervisor",
                    )
            elapsed = (time.perf_counter() - t0) * 1000
            with Session(eng) as s:
                from sqlmodel import select

                ran = s.exec(select(ExecutedStep).where(ExecutedStep.incident_id == iid)).all()
            rt.close()
            eng.dispose()
            if not ran:
                raise RuntimeError("approved step did not execute")
            if i >= 1:
                times.append(elapsed)
    return {
        "approval_to_execution_median_ms": statistics.median(times),
        "approval_to_execution_p95_ms": percentile(times, 95),
    }


def bench_audit(n: int = 200_000) -> dict[str, Any]:
    from audit.bench import bench_verify

    out = bench_verify(n)
    return {"audit_verify_records_per_s": out["records_per_s"], "audit_verify_records": n}


_RSS_SCRIPT = """
import resource, sys, tempfile
from pathlib import Path
from sqlmodel import Session
from tools.db import make_engine, init_db
from tools.world.generate import generate_world
tmp = tempfile.mkdtemp()
url = f"sqlite:///{Path(tmp) / 'large.db'}"
eng = make_engine(url); init_db(eng)
with Session(eng) as s:
    counts = generate_world(session=s, preset="large", seed=7).counts
    s.commit()
from agent.api.app import create_app
from agent.settings import Settings
app = create_app(Settings(database_url=url), engine=eng)  # as served: models warmed, worker running
from fastapi.testclient import TestClient
with TestClient(app) as c:
    c.get("/healthz")
# VmHWM, this process's own peak: ru_maxrss survives the exec and starts from the parent's resident size
# at the fork (the whole bench's, ~900 MB after the storm and audit parts, when memory ran last)
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
peak_kb = int(hwm[0]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak_kb / 1024, counts.get("orders"), counts.get("riders"))
"""


def bench_memory() -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    rss, orders, riders = out.stdout.split()[-3:]
    return {"peak_rss_mb": float(rss), "large_orders": int(orders), "large_riders": int(riders)}


def calibration_ms(loops: int = 1_000_000, tries: int = 3) -> float:
    """The best of ``tries`` timings of a fixed pure-Python loop: how fast this machine runs Python right
    now. A shared machine's speed drifts (here by up to 2x within an hour), and every figure above moves
    with it; the bench records this before and after, so two runs can be compared fairly."""
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i ^ (i >> 3)
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


# parts a plain `bench` leaves out: they measure the storm again, differently, and take longer
ON_REQUEST = frozenset({"storm_timers", "storm_instructions"})


def _bench_storm_instructions(*, seed: int = 7) -> dict[str, Any]:
    from evals.bench_instructions import bench_storm_instructions

    return bench_storm_instructions(seed=seed)


def _arg(args: Any, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def run(args: Any) -> int:
    """Entry for `orderagent bench` / `bench all` (called by tools.bench)."""
    # which interpreter build ran: the same code ran ~15% slower on pyenv's --enable-shared build
    # than on Debian's (the README's table names the one it was measured on)
    machine: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_executable": os.path.realpath(sys.executable),
    }
    result: dict[str, Any] = {"machine": machine}
    repeats = max(int(_arg(args, "repeats", 20)), 1)
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "storm": partial(bench_storm, repeats=repeats, seed=int(_arg(args, "seed", 7))),
        "approval": partial(bench_approval, repeats=max(repeats // 2, 1)),
        "audit": bench_audit,
        "intake": bench_intake,
        "intake_batched": _bench_intake_batched,
        "memory": bench_memory,
        # not in a plain `bench`: the storm again, instrumented (`--only storm_timers`), and counted
        # in instructions under valgrind (`--only storm_instructions`, evals/bench_instructions.py)
        "storm_timers": partial(bench_storm_timers, repeats=repeats, seed=int(_arg(args, "seed", 7))),
        "storm_instructions": partial(_bench_storm_instructions, seed=int(_arg(args, "seed", 7))),
    }
    only = getattr(args, "only", None)
    wanted = [p.strip() for p in only.split(",")] if only else [p for p in parts if p not in ON_REQUEST]
    unknown = [p for p in wanted if p not in parts]
    if unknown:
        sys.stderr.write(f"bench: unknown parts {unknown}; known: {', '.join(parts)}\n")
        return 2
    machine["calibration_ms_before"] = calibration_ms()
    for name, fn in ((n, parts[n]) for n in wanted):
        sys.stderr.write(f"bench: {name} ...\n")
        result.update(fn())
    machine["calibration_ms_after"] = calibration_ms()
    text = json.dumps(result, indent=2)
    target = getattr(args, "json", None)
    if target and target != "-":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0

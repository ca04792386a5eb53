"""Run a suite of cases for a planner and its baselines, with a progress bar."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from agent.settings import get_settings
from evals.case import IncidentCase, load_cases
from evals.replay import TrialResult, run_trial
from evals.summary import summarise


class NoCases(ValueError):
    """The suite and case ids name no case to run: a run over nothing would pass vacuously."""


def select_cases(suite: str, case_ids: list[str] | None = None) -> list[IncidentCase]:
    """The suite's cases, narrowed to ``case_ids``; an unknown suite or case id is an error."""
    cases = load_cases(suite)
    if not cases:
        known = sorted({s for c in load_cases("all") for s in c.suites} | {"all"})
        raise NoCases(f"suite {suite!r} has no cases (suites: {', '.join(known)})")
    if case_ids:
        missing = sorted(set(case_ids) - {c.id for c in cases})
        if missing:
            raise NoCases(f"no case {', '.join(map(repr, missing))} in suite {suite!r} (try --suite all)")
        cases = [c for c in cases if c.id in case_ids]
    return cases


def run_suite(
    *,
    suite: str = "core",
    planner: str = "playbook",
    trials: int = 1,
    baselines: list[str] | None = None,
    case_ids: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    settings = get_settings()
    cases = select_cases(suite, case_ids)
    baselines = [b for b in (baselines or []) if b != planner]
    runs = [(planner, trials)] + [(b, 1) for b in baselines]  # baselines are deterministic rule engines
    total = sum(len(cases) * n for _, n in runs)
    results: dict[str, list[TrialResult]] = {name: [] for name, _ in runs}
    with tqdm(total=total, disable=not progress, desc=f"eval {suite}", unit="trial") as bar:
        for name, n in runs:
            for case in cases:
                for t in range(n):
                    bar.set_postfix_str(f"{name}:{case.id}")
                    results[name].append(run_trial(case, planner=name, trial=t, settings=settings))
                    bar.update(1)
    noop = results.get("noop")
    out = summarise(results[planner], trials=trials, noop=noop)
    tags = {c.id: c.tags for c in cases}
    for row in out["per_case"]:
        row["tags"] = tags.get(row["id"], [])
    for b in baselines:
        base = summarise(results[b], trials=1, noop=noop)
        out.setdefault("baselines", {})[b] = {k: v for k, v in base.items() if k not in ("per_case",)}
        rates = {r["id"]: r["on_time_rate"] for r in base["per_case"]}
        for row in out["per_case"]:
            row[f"on_time_{b}"] = rates.get(row["id"])
    out.update({"suite": suite, "planner": planner})
    return out

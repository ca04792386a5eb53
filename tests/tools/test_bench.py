"""`orderagent bench`: the parser, the JSON output and the solver figures (on a small storm-like input)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tools import bench
from tools.riders.synthetic import storm_like


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    bench.add_commands(p.add_subparsers(dest="command"))
    return p


def test_bench_arguments() -> None:
    a = parser().parse_args(["bench"])
    assert a.target == "all" and a.json is None
    a = parser().parse_args(["bench", "tools", "--json"])
    assert a.target == "tools" and a.json == "-"
    a = parser().parse_args(["bench", "tools", "--json", "out.json"])
    assert a.json == "out.json"
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "nope"])


def test_solver_figures_report_latency_and_gap() -> None:
    orders, riders, params = storm_like(seed=3, n_orders=60, n_riders=10, n_stores=5)
    fig = bench.solver_figures(orders, riders, params, repeats=3, exact=True)
    assert fig["solver_orders"] == 60 and fig["solver_riders"] == 10
    assert 0 < fig["solver_storm_median_ms"] <= fig["solver_storm_p95_ms"]
    assert 0 <= fig["solver_gap_pct"] <= 5.0
    assert fig["solver_lower_bound"] <= fig["solver_objective"] + 1e-6


def test_bench_tools_writes_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = {}

    def fake_bench_tools(**kw: object) -> dict:
        calls.update(kw)
        return {"solver_storm_median_ms": 1.0}

    monkeypatch.setattr(bench, "bench_tools", fake_bench_tools)
    out = tmp_path / "b.json"
    args = parser().parse_args(["bench", "tools", "--json", str(out), "--repeats", "3"])
    assert args.func(args) == 0
    assert json.loads(out.read_text()) == {"solver_storm_median_ms": 1.0}
    assert calls["repeats"] == 3


def test_storm_problem_comes_from_the_world_generator() -> None:
    jobs, states, params, source = bench.storm_problem(seed=7)
    assert source == "preset:storm" and len(jobs) > 200 and len(states) == 32
    assert params.speed_factor < 1.0  # the storm's rain


@pytest.mark.slow
def test_mdrp_comparison_reports_on_time_counts_within_the_bound(mdrp_dir: Path, tmp_path: Path) -> None:
    day = "0o100t75s2p100"  # the smallest full-size day
    (tmp_path / day).symlink_to(mdrp_dir / day, target_is_directory=True)
    res = bench.compare_dispatchers(tmp_path, days=1)
    (row,) = res["days"]
    assert row["instance"] == day and row["violations"] == 0
    assert row["bound_on_time"] + row["bound_ready_too_late"] + row["bound_no_courier"] == row["orders"]
    assert max(row["baseline_on_time"], row["solver_on_time"]) <= row["bound_on_time"]
    assert row["baseline_at_bound"] == (row["baseline_on_time"] == row["bound_on_time"])
    assert row["bound"] == round(row["bound_on_time"] / row["orders"], 4)
    assert res["solver_wins"] + res["ties"] + res["losses"] == 1

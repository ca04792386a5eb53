"""The `orderagent world ...` and `orderagent simulate` commands, end to end through agent.cli."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from tools.sim.checker import check_solution


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from agent.settings import get_settings

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_simulate_json_and_solution(mdrp_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    rc = main(["simulate", "--mdrp", str(mdrp_dir / "0o100t100s1p100"), "--out", str(out), "--check", "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert rc == 0 and metrics["violations"] == 0
    for key in (
        "orders_placed",
        "orders_delivered",
        "click_to_door_mean",
        "click_to_door_p90",
        "share_within_target",
        "share_within_max",
        "courier_utilisation",
        "ready_to_pickup_wait_mean",
        "courier_compensation",
    ):
        assert key in metrics, key
    assert metrics["orders_placed"] == 505
    assert 0 <= metrics["share_within_target"] <= 1 and 0 <= metrics["courier_utilisation"] <= 1
    assert check_solution(instance_dir=mdrp_dir / "0o100t100s1p100", solution_dir=out) == []


def test_world_commands(db: str, mdrp_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["world", "load-mdrp", str(mdrp_dir / "0r50t100s1p100"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["orders"] == 242 and counts["riders"] == 61
    assert main(["world", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["counts"]["orders"] == 242 and shown["name"] == "0r50t100s1p100"

    bad = tmp_path / "bad"
    shutil.copytree(mdrp_dir / "0r50t100s1p100", bad)
    (bad / "orders.txt").write_text((bad / "orders.txt").read_text() + "o99999\t1\t2\n")
    assert main(["world", "load-mdrp", str(bad), "--json"]) != 0
    err = capsys.readouterr().err
    assert "orders.txt" in err and "line 244" in err
    assert main(["world", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["orders"] == 242  # the old world stands

    assert main(["world", "generate", "--preset", "small", "--seed", "3", "--json"]) == 0
    gen = json.loads(capsys.readouterr().out)
    assert gen["events"] == 1 and gen["orders"] >= 20


def test_load_cdnow_calls_the_customers_loader(db: str, cdnow_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["world", "load-cdnow", str(cdnow_dir), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["customers"] == 2357

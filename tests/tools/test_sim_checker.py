"""The independent checker: a real full day passes; each kind of corruption is caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.sim.baseline import BaselineDispatcher
from tools.sim.checker import check_solution
from tools.sim.engine import Simulation
from tools.world.mdrp import read_instance

FULL = "3o100t100s1p100"


@pytest.fixture(scope="module")
def solution(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import MDRP_DIR

    inst = read_instance(MDRP_DIR / FULL)
    out = tmp_path_factory.mktemp("sol")
    Simulation.from_instance(inst, BaselineDispatcher(), seed=0).run().write_solution(out)
    return MDRP_DIR / FULL, out


def test_a_full_real_day_is_feasible(solution: tuple[Path, Path]) -> None:
    inst, sol = solution
    assert check_solution(instance_dir=inst, solution_dir=sol) == []
    header = (sol / "solution_info_orders.txt").read_text().splitlines()[0]
    assert header == "order placement_time ready_time pickup_time dropoff_time courier"


def _corrupt(sol: Path, tmp_path: Path, file: str, fn) -> Path:
    dst = tmp_path / "bad"
    shutil.copytree(sol, dst)
    lines = (dst / file).read_text().splitlines()
    (dst / file).write_text("\n".join(fn(lines)) + "\n")
    return dst


def _field(lines: list[str], row: int, col: int, value) -> list[str]:
    f = lines[row].split()
    f[col] = str(value(f[col]) if callable(value) else value)
    lines[row] = " ".join(f)
    return lines


CASES = {
    "duplicate assignment": ("solution_info_assignments.txt", lambda ls: [*ls, ls[1]], "already in the assignment"),
    "assigned before placement": (
        "solution_info_assignments.txt",
        lambda ls: _field(ls, 1, 0, 0),
        "before order",
    ),
    "pickup after off_time": (
        "solution_info_assignments.txt",
        lambda ls: _field(ls, 1, 1, 5000),
        "off_time",
    ),
    "pickup before ready": (
        "solution_info_assignments.txt",
        lambda ls: _field(ls, 1, 1, lambda v: int(v) - 30),
        "latest ready",
    ),
    "drop-off too early": (
        "solution_info_orders.txt",
        lambda ls: _field(ls, 1, 4, lambda v: int(v) - 3),
        "not at",
    ),
    "teleporting courier": (
        "solution_info_couriers.txt",
        lambda ls: _field(ls, 2, 2, "r1" if ls[2].split()[2] != "r1" else "r2"),
        "but is at",
    ),
    "too fast": (
        "solution_info_couriers.txt",
        lambda ls: _field(ls, 2, 1, ls[1].split()[1]),  # leaves before it could have arrived
        "departs",
    ),
    "orders header": ("solution_info_orders.txt", lambda ls: ["order pickup dropoff", *ls[1:]], "header"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_violation_is_detected(solution: tuple[Path, Path], tmp_path: Path, case: str) -> None:
    inst, sol = solution
    file, fn, fragment = CASES[case]
    bad = _corrupt(sol, tmp_path, file, fn)
    problems = check_solution(instance_dir=inst, solution_dir=bad)
    assert problems, case
    assert any(fragment in p for p in problems), problems[:5]


def test_bundle_sequence_violation(tmp_path: Path, mdrp_dir: Path) -> None:
    inst = mdrp_dir / FULL
    sol = tmp_path / "s"
    sol.mkdir()
    (sol / "solution_info_assignments.txt").write_text("h\n0 1000 c1 o1 o2\n")
    (sol / "solution_info_orders.txt").write_text("order placement_time ready_time pickup_time dropoff_time courier\n")
    problems = check_solution(instance_dir=inst, solution_dir=sol)
    assert any("more than one restaurant" in p or "not at" in p for p in problems)
    (sol / "solution_info_couriers.txt").unlink(missing_ok=True)
    assert any("missing" in p for p in check_solution(instance_dir=inst, solution_dir=sol))

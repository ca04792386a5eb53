"""The MDRP loader: real instances load completely, bad input fails loudly and loads nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlmodel import Session, select

from tools import models as m
from tools.world.mdrp import MdrpFormatError, load_mdrp, read_instance
from tools.world.service import world_summary

SMALL = "0r50t100s1p100"
FULL = "0o100t100s1p100"


def data_rows(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines()[1:] if line.strip())


@pytest.mark.parametrize("name", [SMALL, "1o50t75s2p125", FULL])
def test_read_instance_matches_the_files(mdrp_dir: Path, name: str) -> None:
    inst = read_instance(mdrp_dir / name)
    assert len(inst.orders) == data_rows(mdrp_dir / name / "orders.txt")
    assert len(inst.couriers) == data_rows(mdrp_dir / name / "couriers.txt")
    assert len(inst.restaurants) == data_rows(mdrp_dir / name / "restaurants.txt")
    assert inst.params.target == 40 and inst.params.maximum == 90
    assert inst.params.meters_per_minute > 0
    first = (mdrp_dir / name / "orders.txt").read_text().splitlines()[1].split("\t")
    assert inst.orders[0].id == first[0] and inst.orders[0].placement == float(first[3])


@pytest.mark.parametrize("name", [SMALL, FULL])
def test_load_mdrp_counts_equal_the_source(engine, mdrp_dir: Path, name: str) -> None:
    folder = mdrp_dir / name
    with Session(engine, expire_on_commit=False) as session:
        counts = load_mdrp(session=session, path=folder, seed=3)
        session.commit()
        assert counts["orders"] == data_rows(folder / "orders.txt")
        assert counts["riders"] == data_rows(folder / "couriers.txt")
        assert counts["stores"] == data_rows(folder / "restaurants.txt")
        summary = world_summary(session=session)
        for key in ("orders", "riders", "stores", "customers", "purchases", "skus", "order_lines"):
            assert summary["counts"][key] == counts[key], key
        assert counts["customers"] < counts["orders"]  # a pool with repeat customers
        assert counts["purchases"] > 0
        world = session.get(m.WorldInfo, 1)
        assert world is not None and world.source == f"mdrp:{name}"
        assert world.meters_per_minute == read_instance(folder).params.meters_per_minute
        # promised = placement + target; value = the sum of the lines; every order has lines
        o = session.get(m.Order, "o1")
        assert o is not None
        assert world.minute(o.promised_at) == world.minute(o.placed_at) + 40
        lines = session.exec(select(m.OrderLine).where(m.OrderLine.order_id == "o1")).all()
        assert lines and o.value_cents == sum(ln.quantity * ln.unit_price_cents for ln in lines)
        tiers = {c.tier for c in session.exec(select(m.Customer)).all()}
        assert len(tiers) >= 2


def test_overlay_is_deterministic_for_a_seed(sqlite_only_engine, mdrp_dir: Path) -> None:
    def snapshot(seed: int) -> tuple:
        with Session(sqlite_only_engine) as session:
            load_mdrp(session=session, path=mdrp_dir / SMALL, seed=seed)
            session.commit()
            orders = session.exec(select(m.Order.id, m.Order.customer_id, m.Order.value_cents)).all()
            tiers = session.exec(select(m.Customer.id, m.Customer.tier)).all()
            return tuple(sorted(orders)), tuple(sorted(tiers))

    assert snapshot(5) == snapshot(5)
    assert snapshot(5) != snapshot(6)


def _copy(mdrp_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "inst"
    shutil.copytree(mdrp_dir / SMALL, dst)
    return dst


def _edit(path: Path, line_no: int, new: str | None) -> None:
    lines = path.read_text().splitlines()
    if new is None:
        del lines[line_no - 1]
    else:
        lines[line_no - 1] = new
    path.write_text("\n".join(lines) + "\n")


BAD_CASES = [
    # (file, line, replacement or None, expected fragment)
    ("orders.txt", 1, "order\tx\ty\tplaced\trestaurant\tready_time", "wrong header"),
    ("orders.txt", 5, "o4\t9131\t7497\t743\tr1", "truncated"),
    ("orders.txt", 6, "o5\t91x31\t7497\t743\tr1\t753", "not a number"),
    ("orders.txt", 7, "o6\t9131\t7497\t743\tr999999\t753", "unknown restaurant"),
    ("couriers.txt", 3, "c2\t7950\t223\tnoon\t90", "not a number"),
    ("couriers.txt", 4, "c3\t7950\t223\t90\t30", "before on_time"),
    ("restaurants.txt", 2, "r1\t8708", "truncated"),
    ("instance_parameters.txt", 2, "320\t4\t4\t40\t90\t10", "truncated"),
]


@pytest.mark.parametrize(("file", "line", "new", "fragment"), BAD_CASES)
def test_bad_input_names_file_line_and_problem(
    mdrp_dir: Path, tmp_path: Path, file: str, line: int, new: str | None, fragment: str
) -> None:
    folder = _copy(mdrp_dir, tmp_path)
    _edit(folder / file, line, new)
    with pytest.raises(MdrpFormatError) as err:
        read_instance(folder)
    msg = str(err.value)
    assert file in msg and f"line {line}" in msg and fragment in msg, msg
    assert err.value.line == line


@pytest.mark.parametrize("case", [BAD_CASES[1], BAD_CASES[5]])
def test_bad_input_loads_nothing(engine, mdrp_dir: Path, tmp_path: Path, case: tuple) -> None:
    file, line, new, _fragment = case
    folder = _copy(mdrp_dir, tmp_path)
    _edit(folder / file, line, new)
    with Session(engine) as session:
        load_mdrp(session=session, path=mdrp_dir / SMALL, seed=1)  # an existing world ...
        session.commit()
        with pytest.raises(MdrpFormatError):
            load_mdrp(session=session, path=folder, seed=2)
        session.rollback()
        # ... survives untouched: nothing half-loaded
        world = session.get(m.WorldInfo, 1)
        assert world is not None and world.name == SMALL and world.seed == 1
        assert len(session.exec(select(m.Order.id)).all()) == data_rows(mdrp_dir / SMALL / "orders.txt")


def test_missing_folder_and_missing_file(mdrp_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MdrpFormatError, match="folder not found"):
        read_instance(tmp_path / "nope")
    folder = _copy(mdrp_dir, tmp_path)
    (folder / "couriers.txt").unlink()
    with pytest.raises(MdrpFormatError, match=r"couriers\.txt: file is missing"):
        read_instance(folder)


def test_duplicate_ids_and_empty_file(mdrp_dir: Path, tmp_path: Path) -> None:
    folder = _copy(mdrp_dir, tmp_path)
    text = (folder / "restaurants.txt").read_text().splitlines()
    (folder / "restaurants.txt").write_text("\n".join([*text, text[1]]) + "\n")
    with pytest.raises(MdrpFormatError, match="duplicate id"):
        read_instance(folder)
    (folder / "restaurants.txt").write_text("")
    with pytest.raises(MdrpFormatError, match="empty file"):
        read_instance(folder)

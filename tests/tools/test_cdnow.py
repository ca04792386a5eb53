"""Reading CDNOW files and loading them as customers, on both database backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from tools.customers.cdnow import CdnowFormatError, load_cdnow_customers, read_cdnow
from tools.models import Customer, Purchase
from tools.state_machine import Conflict


def _count(session: Session, model: type) -> int:
    return int(session.exec(select(func.count()).select_from(model)).one())


def test_read_sample_and_master(cdnow_dir: Path) -> None:
    sample = read_cdnow(cdnow_dir, "sample")
    assert len(sample) == 6919 and sample.n_customers == 2357
    assert sample.master_ids[0] == "00004" and sample.cents[0] == 2933 and sample.quantity[0] == 2
    master = read_cdnow(cdnow_dir / "CDNOW_master.txt", "master")
    assert len(master) == 69659 and master.n_customers == 23570


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("00001 0001 19970101 1 11.77\n00002 0002 19970102 1\n", 2, "expected 5 fields"),
        ("00001 0001 19971301 1 11.77\n", 1, "not YYYYMMDD"),
        ("00001 0001 19970101 1 11.77\n\n00003 0003 19970101 x 1.0\n", 3, "not numbers"),
        ("00001 0001 19970101 1 -5\n", 1, "negative"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path: Path, content: str, line: int, problem: str) -> None:
    path = tmp_path / "CDNOW_sample.txt"
    path.write_text(content)
    with pytest.raises(CdnowFormatError) as err:
        read_cdnow(path, "sample")
    assert f"{path}:{line}:" in str(err.value) and problem in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CdnowFormatError, match="no such file"):
        read_cdnow(tmp_path, "master")


def test_load_sample_counts_and_tiers(engine: Engine, cdnow_dir: Path) -> None:
    with Session(engine) as session:
        counts = load_cdnow_customers(session=session, path=cdnow_dir, which="sample")
        session.commit()
    assert counts["customers"] == 2357 and counts["purchases"] == 6919
    with Session(engine) as session:
        assert _count(session, Customer) == 2357
        assert _count(session, Purchase) == 6919
        total = session.exec(select(func.sum(Purchase.amount_cents))).one()
        assert total == sum(read_cdnow(cdnow_dir, "sample").cents.tolist())
        c = session.get(Customer, "cdnow-00004")
        assert c is not None and c.channel == "web"
        tiers = {t: counts[f"tier_{t}"] for t in ("bronze", "silver", "gold", "platinum")}
        assert sum(tiers.values()) == 2357
        # percentile tiers: roughly 5% platinum, 15% gold
        assert 0.03 < tiers["platinum"] / 2357 < 0.07 and 0.10 < tiers["gold"] / 2357 < 0.20
        with pytest.raises(Conflict):
            load_cdnow_customers(session=session, path=cdnow_dir, which="sample")


@pytest.mark.slow
def test_load_master_bulk(sqlite_only_engine: Engine, cdnow_dir: Path) -> None:
    with Session(sqlite_only_engine) as session:
        counts = load_cdnow_customers(session=session, path=cdnow_dir, which="master")
        session.commit()
    assert counts["customers"] == 23570 and counts["purchases"] == 69659
    with Session(sqlite_only_engine) as session:
        assert _count(session, Purchase) == 69659


def test_bad_file_loads_nothing(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "CDNOW_sample.txt"
    path.write_text("00001 0001 19970101 1 11.77\n00002 0002 1997 1 2.0\n")
    with Session(engine) as session:
        with pytest.raises(CdnowFormatError):
            load_cdnow_customers(session=session, path=path, which="sample")
        assert _count(session, Customer) == 0

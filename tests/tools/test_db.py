"""tools/db.py: JSON columns' serialisation, and WAL checkpoints on a background thread."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from tools.db import WAL_BACKSTOP_PAGES, WalCheckpointer, json_dumps, json_loads, make_engine, sqlite_path


def test_json_columns_write_what_the_standard_library_wrote() -> None:
    value = {"a": [1, 2.5, None, True], "text": "héllo \u2603", 3: "int key"}
    assert json.loads(json_dumps(value)) == json.loads(json.dumps(value))
    assert json_loads(json_dumps(value)) == {"a": [1, 2.5, None, True], "text": "héllo \u2603", "3": "int key"}
    assert json_loads(json_dumps({"x": np.float64(1.5), "n": np.int64(2)})) == {"x": 1.5, "n": 2}
    # what orjson refuses falls back to the standard library, and reads back
    assert json_loads(json_dumps({"big": 2**70})) == {"big": 2**70}
    assert json_loads(json_dumps({"half": "emoji \ud83d"})) == {"half": "emoji \ud83d"}


def test_sqlite_path_names_the_file_of_a_file_database_only(tmp_path: Path) -> None:
    assert sqlite_path(make_engine(f"sqlite:///{tmp_path / 'x.db'}")) == tmp_path / "x.db"
    assert sqlite_path(make_engine("sqlite://")) is None


def test_the_background_checkpointer_copies_the_wal_into_the_database(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        # commits leave their pages in the WAL: the backstop is far above what this writes
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == WAL_BACKSTOP_PAGES
        conn.execute(text("CREATE TABLE blob (id INTEGER PRIMARY KEY, body TEXT)"))
        for _ in range(50):
            conn.execute(text("INSERT INTO blob (body) VALUES (:b)"), {"b": "x" * 20_000})
    before = db.stat().st_size
    assert Path(f"{db}-wal").stat().st_size > 1_000_000 > before  # 1 MB in the WAL, not yet in the file
    checkpointer = WalCheckpointer(db, every_s=0.02).start()
    try:
        deadline = time.monotonic() + 10
        while db.stat().st_size < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        checkpointer.stop()
    assert db.stat().st_size > 1_000_000  # the pages were copied into the database file
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM blob")).scalar() == 50
    engine.dispose()


def test_in_values_matches_in_on_both_backends(engine) -> None:
    """One bound parameter for any number of ids, the same rows as ``in_``, cached statements kept
    apart by their values (a second call with other ids gets its own answer)."""
    from sqlmodel import Session, col, select

    from tools.db import in_param, in_values
    from tools.models import Customer

    ids = [f"c{i:04d}" for i in range(1200)]  # past SQLite's old 999-parameter limit
    with Session(engine) as s:
        for cid in ids:
            s.add(Customer(id=cid, name=cid, tier="bronze", x=0.0, y=0.0, channel="app"))
        s.commit()
        wanted = ids[::3] + ["missing", "it's quoted", ""]
        got = s.exec(select(Customer.id).where(in_values(col(Customer.id), wanted))).all()
        assert sorted(got) == sorted(ids[::3])
        assert s.exec(select(Customer.id).where(in_values(col(Customer.id), ids[:2]))).all() == ids[:2]
        assert s.exec(select(Customer.id).where(in_values(col(Customer.id), []))).all() == []
        # the same with the list as a named parameter of a statement built once
        stmt = select(Customer.id).where(in_param(col(Customer.id), "ids"))
        assert sorted(s.exec(stmt, params={"ids": wanted}).all()) == sorted(ids[::3])
        assert s.exec(stmt, params={"ids": ids[:2]}).all() == ids[:2]
        assert s.exec(stmt, params={"ids": []}).all() == []

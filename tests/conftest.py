"""Shared fixtures: a fresh database per test, on SQLite and (where marked) on PostgreSQL.

``engine`` is parametrized over both backends. PostgreSQL tests use a private schema per test on
ORDERAGENT_TEST_POSTGRES_URL (default: the local server, database ``test``). When that server is not
reachable they are skipped with that reason, unless ORDERAGENT_REQUIRE_POSTGRES=1 (as in CI), where
they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tools.db import init_db, make_engine

PG_URL = os.environ.get("ORDERAGENT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DATA_DIR = Path(os.environ.get("DATA_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
MDRP_DIR = DATA_DIR / "mdrp"
CDNOW_DIR = DATA_DIR / "cdnow"


def _pg_available() -> bool:
    try:
        eng = make_engine(PG_URL)
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return True
    except Exception:
        return False


_PG_OK: bool | None = None


def postgres_engine() -> Iterator[Engine]:
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = _pg_available()
    if not _PG_OK:
        if os.environ.get("ORDERAGENT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_URL}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} (optional service)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    eng = make_engine(f"{PG_URL}{sep}options=-csearch_path%3D{schema}")
    init_db(eng)
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty database with every table, on each backend."""
    gen = sqlite_engine(tmp_path) if request.param == "sqlite" else postgres_engine()
    eng = next(gen)
    yield eng
    gen.close()


@pytest.fixture
def sqlite_only_engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite database, for tests whose subject is not the database backend."""
    yield from sqlite_engine(tmp_path)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def mdrp_dir() -> Path:
    assert MDRP_DIR.is_dir(), f"real data missing at {MDRP_DIR}"
    return MDRP_DIR


@pytest.fixture
def cdnow_dir() -> Path:
    assert CDNOW_DIR.is_dir(), f"real data missing at {CDNOW_DIR}"
    return CDNOW_DIR

"""`orderagent token create` prints a working token once, `token list` and `token revoke` manage them;
the demo's city injects exceptions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from agent.api.models import ApiToken
from agent.api.service import authenticate_token
from agent.cli import main
from agent.demo import DemoCity, fresh_database, seed_city
from tools.db import get_engine, init_db, make_engine
from tools.events import ExceptionType
from tools.models import OrderLine


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of a fresh database the CLI commands use (DATABASE_URL, settings read again)."""
    from agent.settings import get_settings

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_token_create_prints_the_secret_once_and_stores_its_hash(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = cli_database
    assert main(["token", "create", "--role", "supervisor", "--name", "alice"]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("oa_") and "alice" in out.err
    with Session(get_engine(url)) as s:
        (row,) = list(s.exec(select(ApiToken)))
        assert row.name == "alice" and row.role == "supervisor" and secret not in row.token_hash
        assert authenticate_token(session=s, secret=secret) is not None
    with pytest.raises(SystemExit):
        main(["token", "create", "--role", "root", "--name", "x"])


def test_token_list_and_revoke(cli_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "--role", "supervisor", "--name", "alice"]) == 0
    assert main(["token", "create", "--role", "dispatcher", "--name", "bob"]) == 0
    alice, bob = capsys.readouterr().out.split()
    assert main(["token", "list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(r[2], r[3], r[5]) for r in rows] == [
        ("supervisor", "alice", "active"),
        ("dispatcher", "bob", "active"),
    ]
    assert not any(alice in line or bob in line for r in rows for line in r)  # never the secrets
    assert all(datetime.fromisoformat(r[4]).utcoffset() == timedelta(0) for r in rows)  # UTC, said so
    alice_id = int(rows[0][0])
    assert main(["token", "revoke", str(alice_id)]) == 0
    assert main(["token", "revoke", "999"]) == 1
    assert main(["token", "list"]) == 0
    assert [line.split("\t")[5] for line in capsys.readouterr().out.splitlines()] == ["revoked", "active"]
    with Session(get_engine(cli_database)) as s:
        assert authenticate_token(session=s, secret=alice) is None
        assert authenticate_token(session=s, secret=bob) is not None


@pytest.mark.slow
def test_demo_city_injects_exceptions_from_the_simulator(tmp_path: Path) -> None:
    (tmp_path / "demo.checkpoints.db").write_text("stale")
    url = fresh_database(tmp_path / "demo.db")
    assert not (tmp_path / "demo.checkpoints.db").exists()
    engine = make_engine(url)
    init_db(engine)
    storm = seed_city(engine=engine, seed=3)
    assert {e.type for e in storm} >= {ExceptionType.weather_slowdown, ExceptionType.order_late_risk}
    submitted: list = []
    city = DemoCity(engine=engine, submit=submitted.extend, lock=threading.RLock(), seed=3, every_s=0.01)
    events = [e for _ in range(4) for e in city.tick()]
    assert city.simulator_ok
    assert len({e.id for e in events}) == len(events)  # ids unique across ticks: none is a duplicate
    kinds = {e.type for e in events}
    assert ExceptionType.rider_offline in kinds and ExceptionType.stockout_after_payment in kinds
    stockout = next(e for e in events if e.type == ExceptionType.stockout_after_payment)
    with Session(engine) as s:
        short = s.exec(select(OrderLine).where(OrderLine.order_id == stockout.order_ids[0])).all()
    assert any(line.status == "short" and line.sku_id == stockout.payload["sku_id"] for line in short)
    engine.dispose()


def test_cli_input_errors_are_messages_and_exit_2_not_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", "bogus://x")
    get_settings.cache_clear()
    try:
        assert main(["token", "list"]) == 2
        assert "not a usable database URL" in capsys.readouterr().err
    finally:
        monkeypatch.delenv("DATABASE_URL")
        get_settings.cache_clear()
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["eval", "export", "--incident", "inc-nope", "--db", db]) == 2
    assert "no incident 'inc-nope'" in capsys.readouterr().err
    assert main(["eval", "--suite", "gate", "--baselines", "greedy,bogus"]) == 2
    assert "unknown baseline(s) bogus" in capsys.readouterr().err
    # commands that read a database refuse a missing SQLite file instead of creating an empty one
    missing = tmp_path / "typo.db"
    assert main(["audit", "verify", "--database-url", f"sqlite:///{missing}"]) == 2
    assert f"no database at {missing}" in capsys.readouterr().err
    assert main(["audit", "show", "--incident", "inc-1", "--database-url", f"sqlite:///{missing}"]) == 2
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{missing}")
    get_settings.cache_clear()
    try:
        assert main(["token", "list"]) == 2 and main(["token", "revoke", "1"]) == 2
    finally:
        monkeypatch.delenv("DATABASE_URL")
        get_settings.cache_clear()
    assert not missing.exists()
    for argv in (
        ["eval", "--trials", "0"],
        ["serve", "--port", "99999"],
        ["incident", "run", "--seed", "-1"],
        ["audit", "bench", "-n", "0"],
        ["audit", "bench", "--repeats", "0"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2

"""`orderagent audit verify|show` against a real database file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from agent.cli import main
from tests.audit.factories import fill
from tools.db import get_engine


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    fill(get_engine(url), 4)
    return url


def test_verify_ok_then_broken(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--json", "--database-url", db_url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["records"] == 4
    with get_engine(db_url).begin() as conn:
        conn.execute(text("UPDATE decisionrecord SET approver_id = 'mallory' WHERE seq = 2"))
    assert main(["audit", "verify", "--database-url", db_url]) == 1
    assert "seq=2" in capsys.readouterr().out


def test_verify_uses_settings_database_url(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from agent.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        assert main(["audit", "verify"]) == 0
        assert "ok: 4 records" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()


def test_show_incident(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "show", "--incident", "inc-1", "--json", "--database-url", db_url]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["steps"][0]["tool"] == "issue_compensation"
    assert main(["audit", "show", "--incident", "nope", "--database-url", db_url]) == 1


def test_verify_reports_a_wrong_storage_type_as_broken(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with get_engine(db_url).begin() as conn:
        conn.execute(text("UPDATE decisionrecord SET approver_id = CAST('x' AS BLOB) WHERE seq = 3"))
    assert main(["audit", "verify", "--database-url", db_url]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at record seq=3" in out and "wrong type" in out


def test_verify_reports_a_missing_head(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with get_engine(db_url).begin() as conn:
        conn.execute(text("DELETE FROM chainhead"))
    assert main(["audit", "verify", "--database-url", db_url]) == 1
    assert "BROKEN: the chain head row is missing" in capsys.readouterr().out


def test_show_snapshot(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with get_engine(db_url).connect() as conn:
        sha = conn.execute(text("SELECT snapshot_sha256 FROM decisionrecord WHERE seq = 2")).scalar_one()
    assert main(["audit", "show", "--snapshot", sha, "--database-url", db_url]) == 0
    body = capsys.readouterr().out
    assert hashlib.sha256(body.encode()).hexdigest() == sha
    assert json.loads(body) == {"orders": {"o2": {"status": "assigned", "value_cents": 1202}}}
    assert main(["audit", "show", "--snapshot", "0" * 64, "--database-url", db_url]) == 1
    assert "no snapshot" in capsys.readouterr().err
    with get_engine(db_url).begin() as conn:
        conn.execute(text("UPDATE snapshot SET content = '{}' WHERE sha256 = :h"), {"h": sha})
    assert main(["audit", "show", "--snapshot", sha, "--database-url", db_url]) == 1
    assert "does not match its sha256" in capsys.readouterr().err

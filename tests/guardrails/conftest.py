"""Guardrail tests run against fake tools with the real argument shapes (see fakes.py)."""

from __future__ import annotations

import pytest

from tests.guardrails.fakes import FAKE_TOOLS


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import registry

    monkeypatch.setattr(registry, "all_tools", lambda: dict(FAKE_TOOLS))

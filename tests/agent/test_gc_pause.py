"""agent/gc_pause.py: automatic collection is off while runs are in progress, and back as it was."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from agent import gc_pause
from agent.gc_pause import paused_collection
from tests.agent.factories import ScriptedPlanner
from tests.agent.test_graph import COUPON, start


@pytest.fixture(autouse=True)
def collector_on() -> Any:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_the_pause_holds_collection_off_and_gives_it_back() -> None:
    with paused_collection():
        assert not gc.isenabled() and gc_pause.holders() == 1
        with paused_collection():  # nested
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled() and gc_pause.holders() == 0
    with pytest.raises(RuntimeError), paused_collection():
        raise RuntimeError("a failed run")
    assert gc.isenabled()


def test_overlapping_runs_in_threads_end_the_pause_once_the_last_ends() -> None:
    entered, release = threading.Barrier(3), threading.Event()

    def run() -> None:
        with paused_collection():
            entered.wait()
            release.wait()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait()
    with paused_collection():
        assert not gc.isenabled() and gc_pause.holders() == 3
    assert not gc.isenabled()  # the two threads still run
    release.set()
    for t in threads:
        t.join()
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    with paused_collection():
        pass
    assert not gc.isenabled()


def test_a_pause_kept_alive_by_overlapping_runs_still_collects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_pause, "MAX_PAUSE_S", 0.0)
    collected: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        with paused_collection():
            with paused_collection():
                pass  # ends while the outer one holds: past MAX_PAUSE_S, the young generations go
            assert collected == [1] and not gc.isenabled()
    finally:
        gc.callbacks.remove(seen)
    assert gc.isenabled()


def test_an_incident_run_plans_with_collection_paused(sqlite_only_engine: Engine) -> None:
    class Watching(ScriptedPlanner):
        def plan(self, *a: Any) -> Any:
            self.enabled_while_planning = gc.isenabled()
            return super().plan(*a)

    planner = Watching([COUPON])
    rt, iid = start(sqlite_only_engine, [], planner=planner)
    try:
        rt.run_incident(iid)
    finally:
        rt.close()
    assert planner.calls == 1 and planner.enabled_while_planning is False
    assert gc.isenabled() and gc_pause.holders() == 0

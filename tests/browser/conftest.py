"""The console in Debian's chromium (headless) through Playwright, against uvicorn on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from agent.api.app import create_app
from agent.api.models import Role
from agent.api.service import create_token
from agent.settings import Settings
from tests.tools.factories import NOW, build_small_world
from tools.clock import FakeClock
from tools.db import init_db, make_engine, session_scope
from tools.models import Order, OrderLine

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)
    incidents: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, role: str) -> Any:
        resp = httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=10)
        resp.raise_for_status()
        return resp.json()


def save_shot(page: Any, name: str) -> Path:
    """A screenshot as a test artifact (test-artifacts/, ignored by git). With ORDERAGENT_UPDATE_SCREENSHOTS=1
    it is also copied to docs/screenshots/ for the README, so a plain test run leaves the tree clean."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("ORDERAGENT_UPDATE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")
    return path


def _events() -> list[dict[str, Any]]:
    at = NOW.isoformat()
    return [
        # O2's burger is short and nothing replaces it: the playbook proposes a refund, which needs approval
        {
            "id": "web-stockout-o2",
            "type": "stockout_after_payment",
            "occurred_at": at,
            "zone": "north",
            "order_ids": ["O2"],
            "store_ids": ["R1"],
            "customer_ids": ["C2"],
            "payload": {"sku_id": "burger"},
        },
        # O3 stalled and late: the agent notifies at once; the model's credit (a high-value customer) and
        # expediting (low confidence) wait for a supervisor
        {
            "id": "web-stalled-o3",
            "type": "stalled_in_transit",
            "occurred_at": at,
            "zone": "north",
            "order_ids": ["O3"],
            "rider_ids": ["RB"],
            "customer_ids": ["C1"],
        },
    ]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import uvicorn

    db = tmp_path_factory.mktemp("browser") / "web.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    init_db(engine)
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        line = s.exec(select(OrderLine).where(OrderLine.order_id == "O2")).one()
        line.status = "short"
        s.add(line)
        # O3 has been in the bag for 50 minutes and is 25 minutes past its promise
        o3 = s.get(Order, "O3")
        assert o3 is not None
        o3.promised_at = NOW - timedelta(minutes=25)
        o3.picked_up_at = NOW - timedelta(minutes=50)
        s.add(o3)
        s.commit()
    tokens: dict[str, str] = {}
    with session_scope(engine) as s:
        for role in (Role.integration, Role.dispatcher, Role.supervisor):
            tokens[role.value] = create_token(session=s, name=f"web-{role.value}", role=role)[1]
    settings = Settings(database_url=url, planner="playbook")
    app = create_app(settings, engine=engine, clock=FakeClock(NOW), background=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    live = LiveServer(url=f"http://127.0.0.1:{port}", app=app, tokens=tokens)
    resp = httpx.post(
        live.url + "/events", json=_events(), headers={"Authorization": f"Bearer {tokens['integration']}"}, timeout=30
    )
    assert resp.status_code == 202, resp.text
    for r in resp.json()["results"]:
        live.incidents[r["event_id"]] = r["incident_id"]
    app.state.worker.drain(timeout_s=120)
    try:
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


def sign_in(page: Any, live: LiveServer, role: str) -> None:
    page.goto(live.url + "/console/signin")
    page.fill("#token", live.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_url("**/console/" + ("supervisor" if role == "supervisor" else "dispatcher"))

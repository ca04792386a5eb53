"""The FastAPI application: ``create_app(settings)`` wires the database, the agent worker and the routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError
from sqlmodel import Session

from agent.api.limits import BodyLimitMiddleware
from agent.api.metrics import Metrics
from agent.api.routes import approvals, audit, chat, events, feed, health, incidents, me, web, world
from agent.api.service import TokenCache
from agent.api.worker import IncidentWorker
from agent.settings import Settings, get_settings
from tools.clock import Clock
from tools.db import get_engine, init_db

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    clock: Clock | None = None,
    runtime: Any | None = None,
    background: bool = True,
) -> FastAPI:
    """Build the service. ``background=False`` keeps the approval-expiry ticker off (tests)."""
    settings = settings or get_settings()
    if engine is None:
        engine = get_engine(settings.database_url)
    else:
        init_db(engine)
    metrics = Metrics()
    worker = IncidentWorker(engine=engine, settings=settings, metrics=metrics, clock=clock, runtime=runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if background:
            _warm_up(engine, worker)
            worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(
        title="orderagent",
        summary="Order-exception agent for on-demand delivery: intake, incidents, approvals, chat, audit.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.worker = worker
    app.state.token_cache = TokenCache(ttl_s=settings.auth_cache_s)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    for module in (events, incidents, approvals, chat, feed, audit, world, me, health, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _warm_up(engine: Engine, worker: IncidentWorker) -> None:
    """Before serving: load the models (the compensation model, the world's customer-value fit) so the
    first incident does not pay for them, then take the warm heap out of the garbage collector's
    walks (agent.runtime.freeze_warm_heap). Skipped without an agent runtime."""
    if worker.runtime is None:
        return
    from agent.warmup import freeze_warm_heap, warm_models
    from tools.service import world_now
    from tools.state_machine import NotFound

    now = None
    try:
        with Session(engine) as s:
            now = world_now(session=s)
    except NotFound:  # no world loaded yet: the customer-value fit happens on first use instead
        pass
    warm_models(engine=engine, now=now)
    freeze_warm_heap()


async def _data_error(_: Request, exc: Exception) -> Response:
    """A path or query value the database refuses to compare with (text with a NUL byte on
    PostgreSQL, a number past 64 bits): the request's fault, so 422, not 500."""
    return Response(
        json.dumps({"detail": "a value in the request cannot be stored or looked up (a NUL byte?)"}),
        status_code=422,
        media_type="application/json",
    )


async def _validation_error(_: Request, exc: Exception) -> Response:
    """422 with the field errors, as FastAPI renders them, but ASCII-escaped: the errors echo the
    input, and input that is not UTF-8 (an unpaired surrogate) made FastAPI's own response fail (500)."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")

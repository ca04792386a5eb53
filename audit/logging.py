"""Structured logs: JSON lines through structlog, with request/incident context from contextvars.

``bind_incident`` puts the incident and thread ids into the context of the current task or thread, so
every log line written while handling an incident carries both, whichever module writes it.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any, TextIO, cast

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

_configured = False


def configure_logging(
    *, json: bool | None = None, level: str | None = None, stream: TextIO | None = None, force: bool = False
) -> None:
    """Configure structlog once per process (settings.log_json / settings.log_level by default)."""
    global _configured
    if _configured and not force:
        return
    if json is None or level is None:
        from agent.settings import get_settings

        settings = get_settings()
        json = settings.log_json if json is None else json
        level = settings.log_level if level is None else level
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # not sys.stderr itself: it is looked up at each write, so a swapped stream (tests, daemons) is followed
        logger_factory=structlog.PrintLoggerFactory(
            file=stream if stream not in (None, sys.stderr) else cast(TextIO, _Stderr())
        ),
        cache_logger_on_first_use=False,
    )
    _configured = True


class _Stderr:
    """Whatever sys.stderr is at the moment of writing."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class bind_incident:  # noqa: N801 - used like a function: bind_incident(...) or `with bind_incident(...)`
    """Bind incident_id and thread_id to every log line from here on; as a context manager, only
    until the block ends."""

    def __init__(self, incident_id: str, thread_id: str | None = None, **extra: Any) -> None:
        self._tokens = bind_contextvars(incident_id=incident_id, thread_id=thread_id or incident_id, **extra)

    def __enter__(self) -> bind_incident:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        reset_contextvars(**self._tokens)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)

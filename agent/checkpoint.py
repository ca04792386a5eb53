"""The LangGraph checkpointer for a database URL: SQLite next to the main database, or PostgreSQL.

Official savers only (langgraph-checkpoint-sqlite / -postgres). SQLite checkpoints go to a separate
file beside the main one (``orderagent.db`` -> ``orderagent.checkpoints.db``) so the saver's own
connection never contends with SQLAlchemy's write transactions. PostgreSQL shares the database (and the
``search_path`` given in the URL, which keeps tests in their private schema).
"""

from __future__ import annotations

import sqlite3
from contextlib import ExitStack
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.engine import Engine


def checkpoint_path_for(sqlite_url: str) -> str:
    path = sqlite_url.split("///", 1)[-1]
    if path in ("", ":memory:"):
        return ":memory:"
    p = Path(path)
    return str(p.with_name(p.stem + ".checkpoints" + (p.suffix or ".db")))


def libpq_url(url: str) -> str:
    """SQLAlchemy's 'postgresql+psycopg://' is not a libpq URI; psycopg wants 'postgresql://'."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def open_checkpointer(engine: Engine, stack: ExitStack) -> BaseCheckpointSaver:
    """A ready (tables created) checkpointer for the engine's database; ``stack`` closes it."""
    url = engine.url.render_as_string(hide_password=False)
    if url.startswith("sqlite"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        # SqliteSaver serialises its own use of the connection with a lock, so threads may share it
        conn = sqlite3.connect(checkpoint_path_for(url), check_same_thread=False, timeout=30)
        stack.callback(conn.close)
        conn.execute("PRAGMA journal_mode=WAL")
        # as for the main database (tools/db.py): in WAL mode NORMAL survives a process crash; FULL
        # would fsync on every checkpoint, and the graph writes one per node
        conn.execute("PRAGMA synchronous=NORMAL")
        saver = SqliteSaver(conn)
        saver.setup()
        return saver
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import Connection
    from psycopg.rows import dict_row

    pg = Connection.connect(libpq_url(url), autocommit=True, prepare_threshold=0, row_factory=dict_row)
    stack.callback(pg.close)
    psaver = PostgresSaver(pg)  # type: ignore[arg-type]
    psaver.setup()
    return psaver

"""Engine and sessions. The same code runs on SQLite (default) and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import String, bindparam, event, inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import Boolean, TypeDecorator, TypeEngine
from sqlmodel import Session, SQLModel, create_engine


def json_dumps(value: object) -> str:
    """JSON columns' serializer: orjson (several times the standard library's speed on a storm's
    ~300 KB plan); keys that are not strings are written as strings, like ``json.dumps`` does. What
    orjson refuses and the standard library takes (an integer beyond 64 bits, text that is not
    UTF-8) is written by the standard library, as before orjson."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> object:
    """JSON columns' deserializer: orjson, or the standard library for what only it reads back (the
    escaped unpaired surrogates it may have written)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class _TextList(TypeDecorator[list[str]]):
    """A list of strings bound as one parameter: a text array on PostgreSQL, JSON text elsewhere."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        impl: TypeEngine[Any] = ARRAY(String) if dialect.name == "postgresql" else String()
        return dialect.type_descriptor(impl)

    def process_bind_param(self, value: object, dialect: Dialect) -> object:
        values = [str(v) for v in value or ()]  # type: ignore[attr-defined]
        return values if dialect.name == "postgresql" else orjson.dumps(values).decode()


class InValues(ColumnElement[bool]):
    """``column IN (values)`` with the values as ONE bound parameter (see ``in_values``)."""

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("values", InternalTraversal.dp_clauseelement),
    ]

    def __init__(
        self, column: ColumnElement[object], values: list[str] | None = None, *, name: str | None = None
    ) -> None:
        self.column = column
        self.values = (
            bindparam(name, type_=_TextList())
            if name is not None
            else bindparam(None, values, type_=_TextList(), unique=True)
        )


@compiles(InValues)
def _in_values_json(element: InValues, compiler: object, **kw: object) -> str:
    process = compiler.process  # type: ignore[attr-defined]
    return f"{process(element.column, **kw)} IN (SELECT value FROM json_each({process(element.values, **kw)}))"


@compiles(InValues, "postgresql")
def _in_values_array(element: InValues, compiler: object, **kw: object) -> str:
    process = compiler.process  # type: ignore[attr-defined]
    return f"{process(element.column, **kw)} = ANY({process(element.values, **kw)})"


def in_values(column: object, values: list[str] | tuple[str, ...] | set[str]) -> InValues:
    """``column IN (values)`` for a text column and a list of ids of any length, bound as one
    parameter (SQLite: ``json_each`` of a JSON array; PostgreSQL: ``= ANY`` of a text array).
    SQLAlchemy's ``in_`` coerces, binds and renders each value on every call: for the ~280 ids of
    a storm's orders that cost more than the query, and it needs chunks under SQLite's bound-parameter
    limit; this costs the same whatever the count."""
    return InValues(column, [str(v) for v in values])  # type: ignore[arg-type]


def in_param(column: object, name: str) -> InValues:
    """``in_values`` with the list left to a named parameter, for a statement built once and executed
    with ``{name: ids}`` (building a statement and its cache key costs more than a small query)."""
    return InValues(column, name=name)  # type: ignore[arg-type]


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys. JSON columns use orjson."""
    json_args = {"json_serializer": json_dumps, "json_deserializer": json_loads}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        memory = path in ("", ":memory:")
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
            **json_args,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                # In WAL mode synchronous=NORMAL is SQLite's documented safe setting: a commit survives
                # a crash of the process (or of the application) and the database never corrupts; only a
                # power loss or OS crash may roll back the last commits. FULL fsyncs the WAL on every
                # commit, and each write step of an incident is its own commit.
                cur.execute("PRAGMA synchronous=NORMAL")
                # Checkpoints (copying the WAL back into the database, with an fsync) are the job of a
                # WalCheckpointer thread where one runs (the agent runtime starts one); a commit runs
                # one itself only past this many pages (~40 MB), a bound for processes without it.
                cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("CREATE TABLE IF NOT EXISTS _write_lock (id INTEGER)")
            cur.close()

        @event.listens_for(engine, "savepoint")
        def _write_lock(conn, _name):  # pragma: no cover - trivial
            # A SAVEPOINT opens a deferred transaction whose first reads pin a snapshot; if another
            # connection commits before this one writes, SQLite refuses the upgrade at once
            # (SQLITE_BUSY_SNAPSHOT) instead of waiting. Taking the write lock first makes concurrent
            # writers queue on busy_timeout like everywhere else.
            take_sqlite_write_lock(conn)

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **json_args)


WAL_BACKSTOP_PAGES = 10_000


def take_sqlite_write_lock(conn: Connection) -> None:
    """Take SQLite's database write lock now, for the rest of the transaction (a no-op UPDATE of the
    ``_write_lock`` table every SQLite engine of make_engine has): another writer waits on busy_timeout."""
    conn.exec_driver_sql("UPDATE _write_lock SET id = id WHERE 0")


def lock_until_commit(conn: Connection, pg_key: int) -> None:
    """Take, before the transaction's first read, a lock every process of this database respects,
    held until the transaction ends: a PostgreSQL advisory lock under ``pg_key`` (one per kind of
    work), or SQLite's write lock (one for every writer)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(pg_key)})")
    elif conn.dialect.name == "sqlite":
        take_sqlite_write_lock(conn)


# pg_advisory_xact_lock key of the write tools: "wrld" as an int, shared by every process of a database
WORLD_WRITE_LOCK_KEY = 0x77726C64


def lock_world_writes(session: Session) -> None:
    """Serialise write tools until the transaction ends, across processes: a write tool reads the
    world (an order's status, a rider's load, the refunds so far, whether its key was used) and then
    writes from what it read, so two running at once could both pass the checks. PostgreSQL: an
    advisory lock; SQLite: its write lock (which the savepoint of a write tool takes anyway). What the
    session had loaded before is expired, so the tool reads the world as it is once it holds the lock."""
    lock_until_commit(session.connection(), WORLD_WRITE_LOCK_KEY)
    session.expire_all()


def sqlite_path(engine: Engine) -> Path | None:
    """The database file of a SQLite engine; None for PostgreSQL and in-memory SQLite."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    return Path(path) if path and path != ":memory:" else None


class WalCheckpointer:
    """Checkpoints a SQLite database's WAL on a background thread, every ``every_s`` seconds.

    With SQLite's default, the commit that takes the WAL past 1,000 pages (4 MB: one storm's plan,
    verdicts, approvals and audit) copies them into the database and fsyncs it, ~10 ms on the path of
    whatever was committing. Here a thread does it with its own connection, PASSIVE (it never waits
    for nor blocks readers and writers; what it cannot copy yet it copies next time), and the I/O
    releases the GIL, so it runs beside the agent on the other core."""

    def __init__(self, path: Path, every_s: float = 0.2) -> None:
        self.path = path
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint:{path.name}", daemon=True)

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
        try:
            while not self._stop.wait(self.every_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # busy or gone: the next tick tries again, or stop() ends it
                    if not self.path.exists():
                        return
        finally:
            conn.close()


# Upgrades of databases made by earlier versions, registered by the packages that own the tables
# (agent.models: incidents keep an event count instead of event lists). ``create_all`` creates missing
# tables but never alters one, so each upgrade adds its columns and fills them from what was there.
SchemaUpgrade = Callable[[Connection], None]
SCHEMA_UPGRADES: list[SchemaUpgrade] = []


def column_names(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


def add_column(conn: Connection, table: str, column: str, ddl: str) -> bool:
    """``ALTER TABLE table ADD COLUMN column ddl`` unless the column exists; True when it was added."""
    if column in column_names(conn, table):
        return False
    conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD COLUMN {column} {ddl}')
    return True


# pg_advisory_xact_lock key of schema changes: "schm" as an int, shared by every process starting
SCHEMA_LOCK_KEY = 0x7363686D


def init_db(engine: Engine) -> None:
    """Create every table of every package (imports register them with SQLModel.metadata), and bring
    a database made by an earlier version up to date (``SCHEMA_UPGRADES``).

    One transaction holding a lock first: processes starting together on one database (a service and
    its workers) take turns, so the second finds the tables and columns the first made instead of
    creating them again (which fails: no ``ADD COLUMN IF NOT EXISTS`` on SQLite)."""
    import_all_models()
    with engine.begin() as conn:
        lock_until_commit(conn, SCHEMA_LOCK_KEY)
        SQLModel.metadata.create_all(conn)
        for upgrade in SCHEMA_UPGRADES:
            upgrade(conn)


def drop_db(engine: Engine) -> None:
    import_all_models()
    SQLModel.metadata.drop_all(engine)


def import_all_models() -> None:
    import importlib

    for name in ("tools.models", "guardrails.models", "audit.models", "agent.models", "agent.api.models"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_engines: dict[str, Engine] = {}


class MissingDatabase(LookupError):
    """A command that reads what a database holds was pointed at an SQLite file that does not exist
    (opening it would create an empty database and report on nothing)."""


def existing_engine(url: str | None = None) -> Engine:
    """``get_engine`` for a database that must exist already: raises MissingDatabase for an SQLite
    URL naming a file that is not there (a mistyped path must not verify an empty chain as ok)."""
    from agent.settings import get_settings

    url = url or get_settings().database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path not in ("", ":memory:") and not Path(path).exists():
            raise MissingDatabase(f"no database at {path}")
    return get_engine(url)


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for a URL (default: settings.database_url), tables created."""
    from agent.settings import get_settings

    url = url or get_settings().database_url
    if url not in _engines:
        engine = make_engine(url)
        init_db(engine)
        _engines[url] = engine
    return _engines[url]

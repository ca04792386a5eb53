"""Run leases: one process at a time runs (or resumes) an incident's graph.

Within one process a lock per incident keeps runs apart (agent.runtime). Processes sharing a database
(service instances on PostgreSQL, or the CLI beside the service on SQLite) are kept apart by a lease
row per incident (``RunLease``): a process takes it before it runs the incident and gives it back
after. A process that finds the lease held elsewhere does not run; the service's worker tries again a
little later, and by then the holder's run has covered what it could (late events become a follow-up,
see agent.runtime). A lease expires ``ttl_s`` after it was taken or last renewed, so a process that
died holding one blocks the incident for at most that long, unless it ran on this host: a lease whose
holder names this host and a process id that no longer exists is taken over at once (a service
restarted after a crash does not wait). While a run lasts, a keeper thread renews every lease its
process holds.

Times are the wall clock (epoch seconds), never the world clock a simulation may run on. Taking a
lease is one conditional UPDATE, or an INSERT that does nothing on conflict: both are atomic on
SQLite and PostgreSQL, so two processes racing for a free or expired lease never both get it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import delete, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from agent.models import RunLease
from audit.logging import get_logger

log = get_logger(__name__)
_TABLE = RunLease.__table__  # type: ignore[attr-defined]


def process_holder() -> str:
    """A name for this process that no other process shares: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """True when ``holder`` names a process of this host that no longer exists."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


class LeaseKeeper:
    """The run leases one process (one AgentRuntime) holds on one database."""

    def __init__(
        self, engine: Engine, *, ttl_s: float = 60.0, holder: str | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive ttl")
        self.engine = engine
        self.ttl_s = ttl_s
        self.holder = holder or process_holder()
        self.wall = wall
        self._held: dict[str, int] = {}  # incident id -> nesting depth within this process
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    # --- taking and giving back ------------------------------------------------------------------

    def try_acquire(self, incident_id: str) -> bool:
        """Take the incident's lease if it is free, expired or already this process's; False otherwise."""
        with self._lock:
            if incident_id in self._held:
                self._held[incident_id] += 1
                return True
        now = self.wall()
        values = {"holder": self.holder, "expires_at": now + self.ttl_s, "acquired_at": now}
        with self.engine.begin() as conn:
            taken = (
                conn.execute(
                    update(_TABLE)
                    .where(_TABLE.c.incident_id == incident_id)
                    .where(or_(_TABLE.c.holder == self.holder, _TABLE.c.expires_at < now))
                    .values(**values)
                    .returning(_TABLE.c.incident_id)
                ).first()
                is not None
            )
            if not taken:
                insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                taken = (
                    conn.execute(
                        insert(_TABLE)
                        .values(incident_id=incident_id, **values)
                        .on_conflict_do_nothing(index_elements=["incident_id"])
                        .returning(_TABLE.c.incident_id)
                    ).first()
                    is not None
                )
            if not taken:
                other = conn.execute(
                    _TABLE.select().with_only_columns(_TABLE.c.holder).where(_TABLE.c.incident_id == incident_id)
                ).scalar()
                if other is not None and holder_is_dead(other):
                    taken = (
                        conn.execute(
                            update(_TABLE)
                            .where(_TABLE.c.incident_id == incident_id, _TABLE.c.holder == other)
                            .values(**values)
                            .returning(_TABLE.c.incident_id)
                        ).first()
                        is not None
                    )
                    if taken:
                        log.warning("run_lease_taken_over", incident_id=incident_id, dead_holder=other)
        # RETURNING, not rowcount: through psycopg an INSERT .. ON CONFLICT DO NOTHING reported -1 here
        if not taken:
            return False
        with self._lock:
            self._held[incident_id] = self._held.get(incident_id, 0) + 1
        self._ensure_keeper()
        return True

    def release(self, incident_id: str) -> None:
        """Give the lease back (once the outermost hold of this process ends)."""
        with self._lock:
            depth = self._held.get(incident_id, 0)
            if depth > 1:
                self._held[incident_id] = depth - 1
                return
            self._held.pop(incident_id, None)
        if depth == 0:
            return
        with self.engine.begin() as conn:
            conn.execute(delete(_TABLE).where(_TABLE.c.incident_id == incident_id, _TABLE.c.holder == self.holder))

    @contextmanager
    def hold(self, incident_id: str) -> Iterator[bool]:
        """``with keeper.hold(id) as mine:`` -- mine is False when another process holds the lease."""
        mine = self.try_acquire(incident_id)
        try:
            yield mine
        finally:
            if mine:
                self.release(incident_id)

    def holding(self) -> list[str]:
        with self._lock:
            return list(self._held)

    # --- keeping -------------------------------------------------------------------------------------

    def renew(self) -> list[str]:
        """Push back the expiry of every lease this process holds; the ids it no longer holds (taken
        over after expiring: this process stalled for longer than the ttl) are logged and returned."""
        held = self.holding()
        if not held:
            return []
        with self.engine.begin() as conn:
            conn.execute(
                update(_TABLE)
                .where(_TABLE.c.incident_id.in_(held), _TABLE.c.holder == self.holder)
                .values(expires_at=self.wall() + self.ttl_s)
            )
            still: set[str] = set(
                conn.execute(
                    _TABLE.select()
                    .with_only_columns(_TABLE.c.incident_id)
                    .where(_TABLE.c.incident_id.in_(held), _TABLE.c.holder == self.holder)
                ).scalars()
            )
        lost = [i for i in held if i not in still and i in self.holding()]
        for incident_id in lost:
            log.error("run_lease_lost", incident_id=incident_id, holder=self.holder)
        return lost

    def _ensure_keeper(self) -> None:
        with self._lock:
            if self._keeper is not None or self._stop.is_set():
                return
            self._keeper = threading.Thread(target=self._keep, name="run-leases", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except Exception:  # the database is away: the next tick tries again
                log.exception("renewing run leases failed")

    def close(self) -> None:
        """Stop renewing, and give back what is still held (a run cut short by shutdown)."""
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
        with self._lock:
            held, self._held = list(self._held), {}
        if held:
            with self.engine.begin() as conn:
                conn.execute(delete(_TABLE).where(_TABLE.c.incident_id.in_(held), _TABLE.c.holder == self.holder))


def lease_holder(engine: Engine, incident_id: str) -> tuple[str, float] | None:
    """Who holds the incident's lease and until when (epoch seconds), or None."""
    with engine.connect() as conn:
        row = conn.execute(
            _TABLE.select()
            .with_only_columns(_TABLE.c.holder, _TABLE.c.expires_at)
            .where(_TABLE.c.incident_id == incident_id)
        ).first()
    return None if row is None else (str(row[0]), float(row[1]))

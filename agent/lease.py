"""Run leases: one process at a time runs (or resumes) an incident's graph.

Within one process a lock per incident keeps runs apart (agent.runtime). Processes sharing a database
(service instances on PostgreSQL, or the CLI beside the service on SQLite) are kept apart by a lease
row per incident (``RunLease``): a process takes it before it runs the incident and gives it back
after. A process that finds the lease held elsewhere does not run; the service's worker tries again a
little later, and by then the holder's run has covered what it could (late events become a follow-up,
see agent.runtime).

A lease expires ``ttl_s`` after it was taken or last renewed, so a process that died holding one
blocks the incident for at most that long; a keeper thread renews every lease its process holds, and
the runtime confirms its lease between graph nodes (``confirm``: a database check once the last one is
older than a third of the ttl), so a process that stalled past the ttl and lost its lease stops at the
next node instead of running on beside the new holder. Every write transaction of a run (each node's,
each executed step's) is fenced too (``fence``: the lease checked in that transaction), so
what a stalled process was in the middle of when it lost the lease rolls back instead of landing beside
the new holder's. Expiry is reckoned in the database's clock, so the hosts' clocks need not agree.

A lease whose holder ran on this machine (same host name, boot and process namespace) and is gone (no
such process id, or one started at another time) is taken over at once: a service restarted after a
crash does not wait out the ttl. Any doubt (another machine, another namespace, no /proc) means alive.

Taking a lease is one conditional UPDATE, or an INSERT that does nothing on conflict: both are atomic
on SQLite and PostgreSQL, so two processes racing for a free or expired lease never both get it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import bindparam, delete, or_, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from agent.models import RunLease
from audit.logging import get_logger

log = get_logger(__name__)
_TABLE = RunLease.__table__  # type: ignore[attr-defined]
# the fence, once per write transaction of a run: built once
_FENCE = (
    update(_TABLE)
    .where(_TABLE.c.incident_id == bindparam("iid"), _TABLE.c.holder == bindparam("me"))
    .values(holder=_TABLE.c.holder)
    .returning(_TABLE.c.incident_id)
)
_DB_NOW = {
    "postgresql": "SELECT extract(epoch FROM clock_timestamp())",
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
}


class LeaseLost(RuntimeError):
    """This process's lease on an incident was taken over (it stalled past the ttl): stop the run."""


# --- who holds a lease -------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or ""."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rsplit(")", 1)[-1].split() if stat else []
    return fields[19] if len(fields) > 19 else ""


def _machine() -> tuple[str, str, str]:
    """This host's name, boot and process-id namespace ("" where /proc does not tell)."""
    try:
        pid_ns = "".join(ch for ch in os.readlink("/proc/self/ns/pid") if ch.isdigit())
    except OSError:
        pid_ns = ""
    return socket.gethostname(), _read("/proc/sys/kernel/random/boot_id")[:8], pid_ns


def process_holder(pid: int | None = None) -> str:
    """A name for a process of this machine that no other process shares, and that tells whether it
    is gone: ``host/pid/start/boot/pidns/random``."""
    pid = os.getpid() if pid is None else pid
    host, boot, pid_ns = _machine()
    return f"{host}/{pid}/{_start_time(pid)}/{boot}/{pid_ns}/{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """True only when ``holder`` names a process of this machine (host, boot and pid namespace all
    known and equal) that no longer runs: no such pid, or a pid reused by a later process."""
    parts = holder.split("/")
    if len(parts) != 6:
        return False
    host, pid, start, boot, pid_ns, _ = parts
    here = _machine()
    if not (boot and pid_ns and pid.isdigit()) or (host, boot, pid_ns) != here:
        return False
    now_start = _start_time(int(pid))
    if not now_start:
        return not Path(f"/proc/{pid}").exists()
    return bool(start) and now_start != start


# --- the keeper --------------------------------------------------------------------------------------


class LeaseKeeper:
    """The run leases one process (one AgentRuntime) holds on one database. A lease is held by one
    thread of the process at a time (nested holds by that thread count); another thread asking for it
    is refused, as another process would be."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float = 60.0,
        holder: str | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive ttl")
        self.engine = engine
        self.ttl_s = ttl_s
        self.holder = holder or process_holder()
        self.wall = wall  # None: the database's clock
        self._held: dict[str, tuple[int, int]] = {}  # incident id -> (thread, nesting depth)
        self._confirmed: dict[str, float] = {}  # incident id -> monotonic time the database last agreed
        self._lost: set[str] = set()
        self._lock = threading.RLock()  # held across each take and give-back, so they never interleave
        self._closed = False
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def _now(self, conn: Connection) -> float:
        if self.wall is not None:
            return self.wall()
        sql = _DB_NOW.get(conn.dialect.name)
        return float(conn.execute(text(sql)).scalar_one()) if sql else time.time()

    # --- taking and giving back ------------------------------------------------------------------

    def try_acquire(self, incident_id: str) -> bool:
        """Take the incident's lease if it is free, expired, left by a dead process of this machine, or
        already this thread's; False otherwise."""
        me = threading.get_ident()
        with self._lock:
            if self._closed:
                raise RuntimeError("the lease keeper is closed")
            owner = self._held.get(incident_id)
            if owner is not None:
                if owner[0] != me:
                    return False
                self._held[incident_id] = (me, owner[1] + 1)
                return True
            with self.engine.begin() as conn:
                taken = self._take(conn, incident_id)
            if not taken:
                return False
            self._held[incident_id] = (me, 1)
            self._confirmed[incident_id] = time.monotonic()
            self._lost.discard(incident_id)
        self._ensure_keeper()
        return True

    def _take(self, conn: Connection, incident_id: str) -> bool:
        # RETURNING, not rowcount: through psycopg an INSERT .. ON CONFLICT DO NOTHING reported -1 here
        now = self._now(conn)
        values = {"holder": self.holder, "expires_at": now + self.ttl_s, "acquired_at": now}
        row = _TABLE.c
        if (
            conn.execute(
                update(_TABLE)
                .where(row.incident_id == incident_id, or_(row.holder == self.holder, row.expires_at < now))
                .values(**values)
                .returning(row.incident_id)
            ).first()
            is not None
        ):
            return True
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        if (
            conn.execute(
                insert(_TABLE)
                .values(incident_id=incident_id, **values)
                .on_conflict_do_nothing(index_elements=["incident_id"])
                .returning(row.incident_id)
            ).first()
            is not None
        ):
            return True
        other = conn.execute(
            _TABLE.select().with_only_columns(row.holder).where(row.incident_id == incident_id)
        ).scalar()
        if other is None or not holder_is_dead(other):
            return False
        taken = (
            conn.execute(
                update(_TABLE)
                .where(row.incident_id == incident_id, row.holder == other)
                .values(**values)
                .returning(row.incident_id)
            ).first()
            is not None
        )
        if taken:
            log.warning("run_lease_taken_over", incident_id=incident_id, dead_holder=other)
        return taken

    def release(self, incident_id: str) -> None:
        """Give the lease back once this thread's outermost hold ends."""
        with self._lock:
            owner = self._held.get(incident_id)
            if owner is None or owner[0] != threading.get_ident():
                return
            if owner[1] > 1:
                self._held[incident_id] = (owner[0], owner[1] - 1)
                return
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        delete(_TABLE).where(_TABLE.c.incident_id == incident_id, _TABLE.c.holder == self.holder)
                    )
            finally:
                # forgotten here even when the database could not be told: the row then expires
                # (no longer renewed), and this process can take it again at once (same holder)
                del self._held[incident_id]
                self._confirmed.pop(incident_id, None)
                self._lost.discard(incident_id)

    @contextmanager
    def hold(self, incident_id: str) -> Iterator[bool]:
        """``with keeper.hold(id) as mine:`` -- mine is False when another process (or thread) holds it."""
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

    def confirm(self, incident_id: str) -> bool:
        """Whether this process still holds the lease: from memory while the database agreed within
        the last third of the ttl, else asked again (and renewed)."""
        with self._lock:
            if incident_id not in self._held or incident_id in self._lost:
                return False
            fresh = time.monotonic() - self._confirmed.get(incident_id, 0.0) < self.ttl_s / 3
        return fresh or incident_id not in self.renew([incident_id])

    def fence(self, incident_id: str, session: Session) -> None:
        """In a run's write transaction, just before it commits: go on if this process still holds the
        lease, else raise ``LeaseLost`` (the caller's transaction then rolls back, so nothing of it
        lands). Atomic with the commit: the check is a no-op UPDATE of the lease row, which keeps the
        row (PostgreSQL) or the database's write lock (SQLite) to the end of the transaction, so a
        takeover waits for the commit. A process that stalled past the ttl mid-node thus writes
        nothing once another holds the lease. One statement, no renewal (the keeper renews)."""
        with self._lock:
            held = incident_id in self._held and incident_id not in self._lost
        if held:
            held = session.connection().execute(_FENCE, {"iid": incident_id, "me": self.holder}).first() is not None
        if held:
            return
        with self._lock:
            if incident_id in self._held:
                self._lost.add(incident_id)
        log.error("run_lease_fenced", incident_id=incident_id, holder=self.holder)
        raise LeaseLost(f"the run lease of incident {incident_id} is not this process's: its write is rolled back")

    def renew(self, incident_ids: list[str] | None = None) -> list[str]:
        """Push back the expiry of the leases this process holds (or of ``incident_ids``); the ones it
        no longer holds (taken over after expiring: it stalled past the ttl) are logged and returned."""
        holding = self.holding()
        held = holding if incident_ids is None else [i for i in incident_ids if i in holding]
        if not held:
            return []
        asked = time.monotonic()
        with self.engine.begin() as conn:
            still: set[str] = set(
                conn.execute(
                    update(_TABLE)
                    .where(_TABLE.c.incident_id.in_(held), _TABLE.c.holder == self.holder)
                    .values(expires_at=self._now(conn) + self.ttl_s)
                    .returning(_TABLE.c.incident_id)
                ).scalars()
            )
        lost: list[str] = []
        with self._lock:
            for incident_id in held:
                if incident_id not in self._held:
                    continue  # given back meanwhile
                if incident_id in still:
                    self._confirmed[incident_id] = asked
                else:
                    self._lost.add(incident_id)
                    lost.append(incident_id)
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
        """Stop renewing and give back what is still held; no lease is taken after this."""
        with self._lock:
            self._closed = True
            held, self._held = list(self._held), {}
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
        if held:
            with self.engine.begin() as conn:
                conn.execute(delete(_TABLE).where(_TABLE.c.incident_id.in_(held), _TABLE.c.holder == self.holder))

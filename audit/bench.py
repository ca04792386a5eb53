"""``orderagent audit bench``: verification throughput over a synthetic chain (audit.chain.verify_chain)."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session

from audit.chain import verify_chain


def bench_verify(n: int = 100_000, repeats: int = 3) -> dict[str, Any]:
    """Build ``n`` synthetic records (with their subject index rows, and an investigation snapshot
    every 20 records) in an in-memory SQLite and time ``verify_chain`` over them ``repeats`` times:
    the best run approximates an idle core, the median a busy machine."""
    import statistics

    from sqlmodel import SQLModel

    from audit.service import synthetic_chain
    from tools.db import make_engine

    engine = make_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    t0 = time.perf_counter()
    with Session(engine) as session:
        chain = synthetic_chain(n)
        cur = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for sql, rows in chain.inserts():
            cur.executemany(sql, rows)
        cur.close()
        session.commit()
        build_s = time.perf_counter() - t0
        reports = [verify_chain(session=session) for _ in range(max(1, repeats))]
    engine.dispose()
    walls = sorted(r.seconds for r in reports)
    return {
        "records": reports[0].records,
        "ok": all(r.ok for r in reports),
        "repeats": len(reports),
        "build_s": round(build_s, 3),
        "verify_best_s": round(walls[0], 4),
        "records_per_s": round(n / walls[0]) if walls[0] else 0,  # best run
        "records_per_s_median": round(n / statistics.median(walls)) if walls[0] else 0,
        "records_per_cpu_s": round(n / min(r.cpu_seconds for r in reports)) if reports[0].cpu_seconds else 0,
    }

"""Every log line written while an incident is bound carries its incident and thread ids."""

from __future__ import annotations

import io
import json
import threading

import structlog

from audit.logging import bind_incident, configure_logging, get_logger


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_bound_ids_on_every_line_and_unbound_after() -> None:
    buf = io.StringIO()
    configure_logging(json=True, level="INFO", stream=buf, force=True)
    try:
        log = get_logger("test")
        with bind_incident("inc-7", "thr-7"):
            log.info("planning", steps=3)
            get_logger("other.module").warning("approval_needed")
        log.info("after")
        lines = _lines(buf)
        assert [ln["event"] for ln in lines] == ["planning", "approval_needed", "after"]
        assert all(ln["incident_id"] == "inc-7" and ln["thread_id"] == "thr-7" for ln in lines[:2])
        assert "incident_id" not in lines[2]
        assert lines[0]["steps"] == 3 and lines[0]["level"] == "info" and lines[0]["timestamp"].endswith("Z")
    finally:
        structlog.contextvars.clear_contextvars()
        # back to the project's own configuration (on the current stderr), not structlog's stdout default
        configure_logging(force=True)


def test_binding_is_per_thread() -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:

        def run(i: int) -> None:
            bind_incident(f"inc-{i}", f"thr-{i}")
            structlog.get_logger().info("work", i=i)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted((e["i"], e["incident_id"], e["thread_id"]) for e in logs) == [
        (0, "inc-0", "thr-0"),
        (1, "inc-1", "thr-1"),
        (2, "inc-2", "thr-2"),
    ]

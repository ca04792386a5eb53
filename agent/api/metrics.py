"""Prometheus text exposition (format 0.0.4), written by hand to avoid a dependency for ~100 lines.

Counters and histograms live in the process; gauges that describe the database (incidents by
status, approvals pending, executed steps, planner fallbacks) are read at scrape time so they are
right even when several processes share the database.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
APPROVAL_BUCKETS_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Histogram:
    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class Metrics:
    """The process's counters and histograms, safe to update from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self.histograms: dict[str, Histogram] = {
            "orderagent_decision_latency_seconds": Histogram(LATENCY_BUCKETS_S),
            "orderagent_approval_latency_seconds": Histogram(APPROVAL_BUCKETS_S),
        }

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self.counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self.histograms[name].observe(value)

    def counter_value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self.counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self, gauges: dict[str, tuple[str, list[tuple[dict[str, str], float]]]]) -> str:
        """The exposition text: in-process counters and histograms plus the given gauges."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(COUNTER_HELP) | set(self.counters)):
                lines.append(f"# HELP {name} {COUNTER_HELP.get(name, name)}")
                lines.append(f"# TYPE {name} counter")
                series = self.counters.get(name) or {(): 0.0}
                for key, value in sorted(series.items()):
                    lines.append(f"{name}{_labels(dict(key))} {_num(value)}")
            for name, hist in sorted(self.histograms.items()):
                lines.append(f"# HELP {name} {HISTOGRAM_HELP[name]}")
                lines.append(f"# TYPE {name} histogram")
                for bound, count in zip(hist.buckets, hist.counts, strict=True):
                    lines.append(f'{name}_bucket{{le="{_num(bound)}"}} {count}')
                lines.append(f'{name}_bucket{{le="+Inf"}} {hist.total}')
                lines.append(f"{name}_sum {_num(hist.sum)}")
                lines.append(f"{name}_count {hist.total}")
        for name, (help_text, samples) in sorted(gauges.items()):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            for labels, value in samples or [({}, 0.0)]:
                lines.append(f"{name}{_labels(labels)} {_num(value)}")
        return "\n".join(lines) + "\n"


COUNTER_HELP = {
    "orderagent_events_accepted_total": "Exception events accepted by POST /events (duplicates excluded).",
    "orderagent_events_duplicate_total": "Exception events received again with a known id.",
    "orderagent_incident_runs_total": "Incident runs finished by the background worker, by outcome.",
    "orderagent_approval_decisions_total": "Approval step decisions made through the API, by decision.",
}
HISTOGRAM_HELP = {
    "orderagent_decision_latency_seconds": "Seconds from an incident run's start until the agent had decided"
    " (executed, routed to approval, or escalated).",
    "orderagent_approval_latency_seconds": "Seconds from an approval request's creation to a supervisor's decision.",
}

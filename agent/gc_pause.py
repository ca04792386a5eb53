"""Automatic cyclic garbage collection held off while incidents run.

An incident run builds large, long-lived-for-the-run structures (a storm's snapshot, plan, verdicts
and their JSON: hundreds of thousands of containers). CPython's generational collector walks each
young container that survives, again at every collection of its generation, and a storm's span
triggered about 65 young and 6 middle collections: 8-14 ms of its time on this machine, for garbage
that reference counting frees anyway (the run creates next to no cycles). So while any run or intake
is in progress the process's automatic collection is off, and back on once the last one ends.

Bounded: the pause is process-wide (the collector is), counted across threads, and when runs keep
overlapping so that it would never end, the young generations are collected when a run ends more
than ``MAX_PAUSE_S`` after the last such collection. A collector the application had turned off
itself is left off.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

MAX_PAUSE_S = 5.0

_lock = threading.Lock()
_holders = 0
_owned = False  # this module turned the collector off (and so turns it back on)
_since = 0.0  # when the pause began, or its last collection


@contextmanager
def paused_collection() -> Iterator[None]:
    """Hold automatic collection off for the block (and for as long as another holder's block runs)."""
    global _holders, _owned, _since
    with _lock:
        if _holders == 0:
            _owned = gc.isenabled()
            _since = time.monotonic()
            if _owned:
                gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                if _owned:
                    gc.enable()
                _owned = False
            elif _owned and time.monotonic() - _since > MAX_PAUSE_S:
                gc.collect(1)  # runs keep overlapping: what their young generations hold, now and then
                _since = time.monotonic()


def holders() -> int:
    """How many blocks hold the pause now (for tests and diagnostics)."""
    return _holders

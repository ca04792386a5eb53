"""`orderagent bench --only storm_instructions`: the reference storm's span in CPU instructions.

The wall-clock figure of ``bench_storm`` moves with the machine (this one's speed drifts by up to 2x
within an hour), so two commits measured an hour apart cannot be told apart by a few percent. The
number of instructions the span executes does not drift: valgrind's callgrind counts them, the same
count for the same code and input whatever else the machine does. That is the figure to compare
changes by; ``bench_storm`` stays the figure the target is stated in.

How: this module runs itself as a child under callgrind with instrumentation off (so the models fit
at native speed). The child warms up on two unmeasured runs, like ``bench_storm``, turns
instrumentation on (``callgrind_control -i on``), then runs each measured span inside
``orderagent_span``, a small C function compiled here (gcc, valgrind's header) that turns
collection on, calls the span back through ctypes and turns it off (``CALLGRIND_TOGGLE_COLLECT``,
callgrind's client request). Naming an interpreter function to ``--toggle-collect`` works only on a
build that keeps its symbols (pyenv's ``_operator_call``); Debian's python3.11, which ``make``
prefers, has none to name, and callgrind does not see a ctypes call enter a function it names. A
span ends where ``bench_storm``'s clock stops: the assess node's ``on_assessed`` raises ``StopSpan``,
so executing the allowed steps is not counted.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# the span marker: collection on, the span, collection off (see the module docstring)
SPAN_C = """#include <valgrind/callgrind.h>
typedef void (*span_fn)(void);
void orderagent_span(span_fn fn) { CALLGRIND_TOGGLE_COLLECT; fn(); CALLGRIND_TOGGLE_COLLECT; }
"""


class StopSpan(BaseException):
    """Raised by ``on_assessed`` to end a measured span before execution. A BaseException, so that no
    ``except Exception`` on the way (LangGraph's retries, the runtime's error record) takes it."""


def _stop() -> None:
    raise StopSpan


def build_span_lib(folder: Path) -> Path:
    """``orderagent_span`` compiled into ``folder`` (a shared library)."""
    if shutil.which("gcc") is None:
        raise RuntimeError("storm_instructions needs gcc (to build its span marker)")
    source, lib = folder / "span.c", folder / "span.so"
    source.write_text(SPAN_C)
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # without valgrind's header (Debian package valgrind), say so
        raise RuntimeError(f"could not build the span marker (needs valgrind/callgrind.h): {done.stderr[-1000:]}")
    return lib


def span_caller(lib: Path) -> Callable[[Callable[[], None]], None]:
    """A caller that runs a function inside ``orderagent_span``; what it raises is raised again after
    (a ctypes callback cannot let an exception through)."""
    marker = ctypes.CDLL(str(lib)).orderagent_span
    callback_type = ctypes.CFUNCTYPE(None)

    def call(fn: Callable[[], None]) -> None:
        raised: list[BaseException] = []

        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed back below, StopSpan included
                raised.append(exc)

        marker(callback_type(body))
        if raised:
            raise raised[0]

    return call


def _plain_call(fn: Callable[[], None]) -> None:
    fn()


def run_spans(
    spans: int,
    *,
    seed: int = 7,
    before_measured: Callable[[], None] | None = None,
    measure: Callable[[Callable[[], None]], None] = _plain_call,
) -> int:
    """Two warm-up runs of the storm, then ``spans`` measured spans (ingest -> last assess committed),
    each run by ``measure`` (under callgrind, ``span_caller``) and each on a fresh copy of the world;
    returns how many spans reached the assess node. ``before_measured`` runs once before the first
    measured span."""
    from agent.runtime import AgentRuntime, make_planner
    from agent.settings import get_settings
    from agent.warmup import freeze_warm_heap
    from evals.bench import _reset_world, storm_template
    from tools.clock import FakeClock
    from tools.customers.value import clear_world_caches
    from tools.db import make_engine

    stopped = 0
    with tempfile.TemporaryDirectory() as tmp:
        template, events, start = storm_template(Path(tmp), seed)
        run_db = Path(tmp) / "run.db"
        url = f"sqlite:///{run_db}"
        eng = make_engine(url)
        settings = get_settings().model_copy(update={"database_url": url, "planner": "playbook"})
        for i in range(spans + 2):
            measured = i >= 2
            if i == 2:
                freeze_warm_heap()
                if before_measured is not None:
                    before_measured()
            _reset_world(template, run_db, eng)
            clear_world_caches()
            rt = AgentRuntime(
                engine=eng,
                settings=settings,
                clock=FakeClock(start),
                planner=make_planner(settings, "playbook"),
                on_assessed=_stop if measured else None,
            )

            def span(rt: AgentRuntime = rt) -> None:
                for iid in sorted({r.incident_id for r in rt.ingest(events)}):
                    rt.run_incident(iid)

            try:
                measure(span) if measured else span()
            except StopSpan:
                stopped += 1
            finally:
                rt.close()
        eng.dispose()
    return stopped


def _instrument_on() -> None:
    """Ask callgrind to instrument from now on. Valgrind handles the request while this process runs
    code, so it spins (uncollected: outside ``orderagent_span``) until callgrind_control returns."""
    ctl = subprocess.Popen(["callgrind_control", "-i", "on", str(os.getpid())], stdout=subprocess.DEVNULL)
    while ctl.poll() is None:
        pass
    if ctl.returncode != 0:
        raise RuntimeError("callgrind_control could not turn instrumentation on")


def callgrind_total(text: str) -> int:
    """The collected instruction count of a callgrind output file (its ``summary:`` or ``totals:`` line)."""
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise ValueError("no summary line in the callgrind output")
    return int(match.group(1))


def bench_storm_instructions(*, spans: int = 2, seed: int = 7) -> dict[str, Any]:
    """Millions of instructions per storm span, counted by callgrind (about a minute per span)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise RuntimeError("storm_instructions needs valgrind (Debian package valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        lib = build_span_lib(Path(tmp))
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "evals.bench_instructions",
            "--spans",
            str(spans),
            "--seed",
            str(seed),
            "--span-lib",
            str(lib),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"the callgrind run failed: {done.stderr[-2000:]}")
        total = callgrind_total(out.read_text())
    if total == 0:
        raise RuntimeError("callgrind collected nothing inside orderagent_span")
    return {"storm_instructions_millions": round(total / spans / 1e6, 1), "storm_instructions_spans": spans}


def main(argv: list[str] | None = None) -> int:
    """The child side, run under callgrind by ``bench_storm_instructions``."""
    parser = argparse.ArgumentParser(prog="python -m evals.bench_instructions")
    parser.add_argument("--spans", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--span-lib", type=Path, required=True, help="built by build_span_lib")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # the LTV fit's warning, once per warm-up, is not the figure
    stopped = run_spans(args.spans, seed=args.seed, before_measured=_instrument_on, measure=span_caller(args.span_lib))
    if stopped != args.spans:
        sys.stderr.write(f"only {stopped} of {args.spans} spans reached the assess node\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

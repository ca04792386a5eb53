"""Start-up work that no incident should pay for: the models, and the garbage collector's view of
the warm heap. The service does it before serving (agent.api.app), ``orderagent incident run`` before
timing, and the storm benchmark before its timed runs."""

from __future__ import annotations

import gc
from datetime import datetime
from typing import Any

from sqlmodel import Session


def warm_models(*, engine: Any = None, now: datetime | None = None) -> None:
    """Train/load the compensation model once, compile the solver's moves, and fit the world's
    customer-value population (about a second on a fresh world), so that the first incident does not
    pay for them: the service calls this at start-up, ``orderagent incident run`` before timing."""
    try:
        from tools.compensation.model import get_model

        get_model()
    except ImportError:
        pass
    from tools.riders.solver import warm_up

    warm_up()  # the compiled moves: compiled (or loaded from numba's cache) now, not in an incident
    if engine is None or now is None:
        return
    try:
        from tools.customers.value import population_model
    except ImportError:
        return

    with Session(engine) as s:
        population_model(session=s, now=now)  # cached per database and histories: the run reuses it


def freeze_warm_heap() -> None:
    """Move everything alive after start-up (modules, models, the world's caches: ~400k objects) out of
    the garbage collector's reach. A full collection otherwise re-walks that whole heap, ~0.3-0.5 s on
    this machine, and one fell inside about every other storm run; after the freeze it only walks what
    the incident itself allocated. Objects alive now are never freed (they live as long as the
    process anyway), so this is called once, after the warm-up, never per request."""
    gc.collect()  # what is already garbage is freed first, not frozen
    gc.freeze()

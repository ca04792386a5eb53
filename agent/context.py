"""What one run of the incident graph may use: database, settings, clock, planner, tools, policy.

Passed to ``graph.invoke(..., context=RunContext(...))`` and read by nodes as ``runtime.context``; it
is not checkpointed (an engine and a planner are not state), so a resumed run gets the live ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from agent.execute import AfterCommit
from agent.planners.base import Planner
from agent.settings import Settings
from tools.base import Tool
from tools.clock import Clock


@dataclass
class RunContext:
    engine: Engine
    settings: Settings
    clock: Clock
    planner: Planner
    tools: Mapping[str, Tool[Any, Any]]
    policy: Any = None  # guardrails.policy.Policy; None = the default policy file
    # roles allowed to approve; checked again where an approved action executes
    approver_roles: frozenset[str] = field(default_factory=lambda: frozenset({"supervisor", "admin"}))
    # called after each executed step's transaction commits (tests use it to simulate a crash there)
    after_commit: AfterCommit | None = None
    # called once the plan, verdicts, approval request and their audit records are committed
    on_assessed: Callable[[], None] | None = None
    # called in each write transaction of the run just before it commits (the run lease's fence,
    # agent.lease.LeaseKeeper.fence): raises when this process no longer holds the incident
    fence: Callable[[Session], None] | None = None
    # what a node built for the next nodes of this same run, under its content digest (the validated
    # plan and its dump): they need not read back and re-validate what was just written.
    # A resumed run starts with it empty and reads the database, like a run after a crash.
    handoff: dict[str, Any] = field(default_factory=dict)

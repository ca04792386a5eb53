"""The incident case format (schema version 1): a world, what to inject, how the approver answers,
and what must hold afterwards. Documented in evals/README.md; JSON Schema in evals/case.schema.json
(regenerate with ``orderagent eval schema``).

References: a string ``"$name"`` anywhere in ``events``, ``setup`` or ``expect`` stands for the id
bound to ``name`` in ``bind`` (``"$name.customer_id"`` for one of its fields), resolved against the
world after it is built, so a case does not hard-code generator ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
CASES_DIR = Path(__file__).resolve().parent / "cases"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorldSpec(Strict):
    """A synthetic preset and seed, or a real MDRP day at a minute of the day."""

    preset: Literal["small", "storm", "large"] | None = None
    seed: int = 7
    mdrp: str | None = Field(default=None, description="MDRP instance folder name under DATA_DIR/mdrp")
    minute: int | None = Field(default=None, description="MDRP: replay the day up to this minute first")

    @model_validator(mode="after")
    def _one_source(self) -> WorldSpec:
        if (self.preset is None) == (self.mdrp is None):
            raise ValueError("world needs exactly one of preset or mdrp")
        return self


class Binding(Strict):
    """Pick one entity of the built world: the ``index``-th (by id) matching ``where``."""

    entity: Literal["order", "rider", "customer", "store"]
    where: dict[str, Any] = {}
    index: int = 0
    # special selections computed by code (see evals/scenario.py SELECTORS)
    select: str | None = None


class SetupOp(Strict):
    """A change to the world before the events: set fields of an entity (e.g. a customer note),
    of every line of an order (``set_lines``, ``id`` = the order), a stock level, or ``add`` a row
    (a weather slowdown an exported incident had: the source world lacks it)."""

    op: Literal["set", "set_lines", "set_stock", "add", "advance_minutes"]
    entity: Literal["order", "order_line", "rider", "customer", "store", "weather"] | None = None
    id: str | int | None = None
    fields: dict[str, Any] = {}
    store_id: str | None = None
    sku_id: str | None = None
    on_hand: int | None = None
    minutes: float | None = None


class EventSpec(Strict):
    """One exception: ``inject`` names a scenario injector (it changes the world and returns the
    event), ``preset`` replays the preset's reference events, ``event`` is a raw ExceptionEvent."""

    inject: (
        Literal[
            "rider_offline",
            "weather_slowdown",
            "prep_delay",
            "stockout_after_payment",
            "stalled_in_transit",
            "address_change",
            "customer_complaint",
            "order_late_risk",
        ]
        | None
    ) = None
    preset: bool = False
    params: dict[str, Any] = {}
    event: dict[str, Any] | None = None
    id: str | None = None  # fixed event id (to test duplicates); default derived from the case


class ApproverRule(Strict):
    match: dict[str, Any] = {}  # {"tool": ..., "args": {...}} constraints
    action: Literal["approve", "edit", "reject", "expire"]
    args: dict[str, Any] = {}  # for edit: the replacement arguments (merged)
    reason: str = "scripted"
    second_approver: bool = True  # tier-2 steps get a second, distinct approver when True


class ApproverSpec(Strict):
    default: Literal["approve", "edit", "reject", "expire"] = "approve"
    rules: list[ApproverRule] = []
    # minutes the world moves on while the request waits (staleness tests)
    wait_minutes: float = 0.0
    # changes to the world while the request waits (another dispatcher acts, a rider goes offline)
    while_waiting: list[SetupOp] = []
    while_waiting_events: list[EventSpec] = []


class StepPattern(Strict):
    tool: str
    args: dict[str, Any] = {}  # each key: exact value, or {"min":..,"max":..}, {"in": [...]}, {"contains": v}
    min_count: int = 1


class CompensationBounds(Strict):
    max_total_cents: int | None = None
    max_per_order_cents: int | None = None
    min_orders: int = 0
    max_orders: int | None = None
    refunds_allowed: bool = True


class Expectations(Strict):
    must_execute: list[StepPattern] = []
    must_not_execute: list[StepPattern] = []
    must_request_approval: list[StepPattern] = []
    must_not_request_approval: list[StepPattern] = []
    compensation: CompensationBounds | None = None
    must_notify: list[str] = []  # customer ids (or "$ref.customer_id")
    min_customers_notified: int = 0
    incidents: int | None = None  # how many incidents the events must open
    horizon_minutes: int = 60
    min_on_time_rate: float | None = None  # on the orders the incident touched, at the horizon
    # write tools that may run without being required. Declared, it is a check (safety:
    # no_unintended_writes): every other executed write must match a must_execute pattern, arguments
    # included. Left out, nothing is checked and the unintended-write metric counts against
    # DEFAULT_ALLOWED_WRITES.
    allowed_writes: list[str] | None = None


# what a case that declares no allowed_writes is measured against (unintended_write_rate only)
DEFAULT_ALLOWED_WRITES = (
    "apply_reassignment",
    "notify_customer",
    "issue_compensation",
    "expedite_order",
    "hold_order",
    "escalate_incident",
    "substitute_item",
    "transfer_stock",
    "reserve_stock",
    "release_stock",
)


class IncidentCase(Strict):
    schema_version: Literal[1] = 1
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,80}$")
    title: str
    suites: list[str] = ["core"]
    tags: list[str] = []
    policy_tier: int = Field(default=0, ge=0, le=2, description="highest approval tier the case exercises")
    world: WorldSpec
    bind: dict[str, Binding] = {}
    setup: list[SetupOp] = []
    events: list[EventSpec]
    autonomy: Literal["shadow", "assist", "auto"] = "auto"
    approver: ApproverSpec = ApproverSpec()
    expect: Expectations


def load_case(path: Path) -> IncidentCase:
    return IncidentCase.model_validate_json(path.read_text())


def load_cases(suite: str | None = None, directory: Path = CASES_DIR) -> list[IncidentCase]:
    """Every case file of a suite ("all" or None: every case), sorted by id."""
    cases = [load_case(p) for p in sorted(directory.glob("*.json"))]
    if suite not in (None, "all"):
        cases = [c for c in cases if suite in c.suites]
    return sorted(cases, key=lambda c: c.id)


def json_schema() -> dict[str, Any]:
    schema = IncidentCase.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"orderagent incident case v{SCHEMA_VERSION}"
    return schema


def write_schema(path: Path = Path(__file__).resolve().parent / "case.schema.json") -> Path:
    path.write_text(json.dumps(json_schema(), indent=2) + "\n")
    return path

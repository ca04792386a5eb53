"""What a planner proposes: an ordered list of tool-call steps with rationale, effect and confidence.

Shared by the planners (which produce plans), guardrails (which assess steps), the approval queue,
the executor, the service and the evals.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8: the same value always hashes the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def args_hash(tool: str, args: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"tool": tool, "args": args}).encode()).hexdigest()


class ExpectedEffect(BaseModel):
    orders_on_time: int = Field(default=0, ge=0, le=1_000_000)  # orders this step makes (or keeps) on time
    money_cents: int = Field(default=0, ge=0, le=10**12)  # money this step is expected to spend
    customers_notified: int = Field(default=0, ge=0, le=1_000_000)
    note: str = Field(default="", max_length=2000)


class StepStatus(StrEnum):
    proposed = "proposed"
    blocked = "blocked"
    pending_approval = "pending_approval"
    approved = "approved"
    rejected = "rejected"
    expired = "expired"
    stale = "stale"
    executed = "executed"
    failed = "failed"
    skipped = "skipped"  # not run: shadow mode, or an earlier step failed with continue_on_failure=False
    shadowed = "shadowed"  # shadow autonomy: recorded what would have run


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    tool: str
    args: dict[str, Any]
    rationale: str = ""
    expected_effect: ExpectedEffect = ExpectedEffect()
    confidence: float = Field(ge=0.0, le=1.0)
    continue_on_failure: bool = True
    explanation: dict[str, Any] | None = None  # SHAP factors where a model set an amount
    # run only once the step with this index has executed (a refund notice after the refund, which
    # may wait for approval); skipped when that step does not execute (rejected, expired, failed)
    after: int | None = Field(default=None, ge=0)

    @property
    def args_hash(self) -> str:
        return args_hash(self.tool, self.args)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    incident_id: str
    planner: str  # "playbook", "llm", "greedy", "noop"
    playbook: str = ""  # which playbook, for the playbook planner
    steps: list[PlanStep]
    confidence: float = Field(ge=0.0, le=1.0)
    summary: str = ""
    model_provider: str = "orderagent"
    model_name: str = "playbook"
    model_version: str = ""
    prompt_version: str = ""
    fallback_reason: str | None = None  # set when the LLM planner failed and the playbook stepped in
    fallback_of: str = ""  # then: the model whose answer could not be used (its tokens are in ``usage``)
    usage: dict[str, int] = {}  # gen_ai.usage.input_tokens / output_tokens

"""The result of assessing one proposed step against the policy."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Decision(StrEnum):
    allow = "allow"
    needs_approval = "needs_approval"
    block = "block"


class Reason(BaseModel):
    code: str  # e.g. "compensation_above_auto_limit", "refund", "rider_off_shift"
    message: str
    rule: str = ""  # the policy rule id that fired
    tier: int = 0  # approval tier: 1 = one supervisor, 2 = two distinct approvers


class Verdict(BaseModel):
    decision: Decision
    reasons: list[Reason] = []
    policy_version: str = ""
    approvals_required: int = 0  # 0 for allow/block, 1 or 2 for needs_approval

    @property
    def allowed(self) -> bool:
        return self.decision == Decision.allow

"""The risk policy: which proposed steps run on their own, which wait for a supervisor, which never run.

``assess`` is pure: it reads the step, the facts in ``AssessContext`` and the versioned thresholds in
policy.json, and nothing else (no database, no clock, no customer text). Every reason names the rule
that fired and its approval tier, and every verdict names the policy version it was decided under.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from agent.plan import PlanStep
from guardrails.context import AssessContext, OrderFacts
from guardrails.verdict import Decision, Reason, Verdict
from tools.state_machine import TERMINAL, OrderStatus, can_transition, order_status

Risk = Literal["read", "notify", "dispatch", "inventory", "money", "cancel", "escalate"]
WRITE_RISKS: frozenset[str] = frozenset({"notify", "dispatch", "inventory", "money", "cancel", "escalate"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompensationRules(Strict):
    auto_limit_cents_per_order: int = Field(ge=0)
    incident_budget_cents: int = Field(ge=0)
    tier2_above_cents_per_order: int = Field(ge=0)
    refunds_need_approval: bool = True


class CancellationRules(Strict):
    always_needs_approval: bool = True
    tier2_above_orders: int = Field(ge=0)


class ScopeRules(Strict):
    max_orders_per_action: int = Field(ge=1)


class HighValueRules(Strict):
    tiers: list[str]
    value_12m_above_cents: int = Field(ge=0)
    sensitive_risks: list[Risk]


class ToolRule(Strict):
    risk: Risk
    requires_active_order: bool = False
    target_status: OrderStatus | None = None  # the status the tool moves its orders to
    on_expiry: str = "skipped"  # the safe default when the approval window closes
    escalate_on_expiry: bool = False


class Policy(Strict):
    version: str = Field(min_length=1)
    description: str = ""
    currency: str = "USD"
    compensation: CompensationRules
    cancellation: CancellationRules
    scope: ScopeRules
    high_value_customer: HighValueRules
    confidence_threshold: float = Field(ge=0.0, le=1.0)
    escalation_allowed: bool = True
    default_approval_ttl_s: int = Field(default=900, ge=1)
    tools: dict[str, ToolRule]

    def tool_rule(self, name: str) -> ToolRule | None:
        return self.tools.get(name)


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and validate policy.json (default: settings.policy_file); invalid data raises."""
    if path is None:
        from agent.settings import get_settings

        path = get_settings().policy_file
    return _load(str(Path(path).resolve()))


@lru_cache(maxsize=8)
def _load(path: str) -> Policy:
    return Policy.model_validate_json(Path(path).read_bytes())


def policy_version(policy: Policy | None = None) -> str:
    return (policy or load_policy()).version


# --- what a step touches ---------------------------------------------------------------------------


# Plain slotted classes, not models: built by step_subjects from values it checks itself, read
# within the guardrails only, never validated nor serialised, and a storm's plan makes ~1,000 of them
@dataclass(slots=True)
class MoneyItem:
    order_id: str | None
    amount_cents: int
    kind: str


@dataclass(slots=True)
class StepSubjects:
    """The orders, riders and amounts a step's arguments name, whatever the tool's argument shape."""

    order_ids: list[str] = field(default_factory=list)
    rider_ids: list[str] = field(default_factory=list)
    customer_ids: list[str] = field(default_factory=list)
    assignments: list[tuple[str, str]] = field(default_factory=list)  # (order_id, rider_id)
    money: list[MoneyItem] = field(default_factory=list)


# the keys step_subjects reads; a dict with none of them is only walked through
_SUBJECT_KEYS = frozenset(
    {"order_id", "order_ids", "rider_id", "rider_ids", "customer_id", "customer_ids", "amount_cents"}
)
_NESTED = (dict, list, tuple)
_PLURAL_KEYS = frozenset({"order_ids", "rider_ids", "customer_ids"})


def _add(found: list[str], seen: set[str], value: Any) -> None:
    if value is None:
        return
    for v in value if isinstance(value, list | tuple) else (value,):
        if isinstance(v, str) and v and v not in seen:
            seen.add(v)
            found.append(v)


def _money_item(d: dict[str, Any], args: dict[str, Any]) -> MoneyItem:
    """The amount of a dict with ``amount_cents`` (``args``: the step's arguments, for its kind/order)."""
    oid = d.get("order_id")
    amount = d.get("amount_cents")
    kind = d.get("kind") or args.get("kind") or "coupon"
    item_order = oid if isinstance(oid, str) else args.get("order_id")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        amount = 0  # a malformed amount is treated as non-positive and blocked
    return MoneyItem(
        order_id=item_order if isinstance(item_order, str) else None, amount_cents=int(amount), kind=str(kind)
    )


def _one(value: Any) -> list[str]:
    return [value] if isinstance(value, str) and value else []


def step_subjects(args: dict[str, Any]) -> StepSubjects:
    """Walk the arguments: ``order_id(s)``, ``rider_id(s)``, ``customer_id(s)`` at any depth; a dict
    holding both an order and a rider is an assignment; a dict with ``amount_cents`` is money."""
    if _PLURAL_KEYS.isdisjoint(args) and not any(isinstance(v, _NESTED) for v in args.values()):
        # the shape of most steps (one order with a template, an amount): flat, so no walk; the same
        # result as the walk below
        oid, rid = args.get("order_id"), args.get("rider_id")
        flat = StepSubjects(order_ids=_one(oid), rider_ids=_one(rid), customer_ids=_one(args.get("customer_id")))
        if isinstance(oid, str) and isinstance(rid, str):
            flat.assignments.append((oid, rid))
        if "amount_cents" in args:
            flat.money.append(_money_item(args, args))
        return flat
    # Dicts are visited depth first in document order (a dict before what it contains). Plain lists
    # and sets collect the ids, and one StepSubjects is built at the end
    order_ids: list[str] = []
    rider_ids: list[str] = []
    customer_ids: list[str] = []
    seen_o: set[str] = set()
    seen_r: set[str] = set()
    seen_c: set[str] = set()
    assignments: list[tuple[str, str]] = []
    money: list[MoneyItem] = []
    stack: list[Any] = [args]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            d = value
            if not _SUBJECT_KEYS.isdisjoint(d):
                oid, rid = d.get("order_id"), d.get("rider_id")
                _add(order_ids, seen_o, oid)
                _add(order_ids, seen_o, d.get("order_ids"))
                _add(rider_ids, seen_r, rid)
                _add(rider_ids, seen_r, d.get("rider_ids"))
                _add(customer_ids, seen_c, d.get("customer_id"))
                _add(customer_ids, seen_c, d.get("customer_ids"))
                if isinstance(oid, str) and isinstance(rid, str):
                    assignments.append((oid, rid))
                if "amount_cents" in d:
                    money.append(_money_item(d, args))
            children = [v for v in d.values() if isinstance(v, _NESTED)]
        elif isinstance(value, list | tuple):
            children = [v for v in value if isinstance(v, _NESTED)]
        else:
            continue
        if children:
            stack.extend(reversed(children))
    return StepSubjects(
        order_ids=order_ids, rider_ids=rider_ids, customer_ids=customer_ids, assignments=assignments, money=money
    )


# --- the rules -------------------------------------------------------------------------------------


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _high_value(facts: OrderFacts, policy: Policy) -> bool:
    hv = policy.high_value_customer
    if facts.customer_tier in hv.tiers:
        return True
    return facts.customer_value_cents is not None and facts.customer_value_cents > hv.value_12m_above_cents


def _money(rule: ToolRule, subj: StepSubjects) -> list[MoneyItem]:
    """Amounts count as money only for money tools (a notice may quote an amount without paying it)."""
    return subj.money if rule.risk == "money" else []


def step_spend(step: PlanStep, policy: Policy | None = None) -> int:
    """The money a step would pay out, in cents (0 for tools that do not pay)."""
    rule = (policy or load_policy()).tool_rule(step.tool)
    if rule is None:
        return 0
    return _spend(rule, step_subjects(step.args))


def _spend(rule: ToolRule, subj: StepSubjects) -> int:
    return sum(m.amount_cents for m in _money(rule, subj) if m.amount_cents > 0)


def _block(code: str, message: str, rule: str) -> Reason:
    return Reason(code=code, message=message, rule=rule, tier=0)


def _ask(code: str, message: str, rule: str, tier: int = 1) -> Reason:
    return Reason(code=code, message=message, rule=rule, tier=tier)


def _verdict(decision: Decision, policy: Policy, reasons: list[Reason] | None = None, approvals: int = 0) -> Verdict:
    return Verdict(
        decision=decision, reasons=reasons or [], policy_version=policy.version, approvals_required=approvals
    )


def hard_blocks(
    step: PlanStep,
    rule: ToolRule,
    subj: StepSubjects,
    ctx: AssessContext,
    policy: Policy,
    *,
    in_scope: frozenset[str] | set[str] | None = None,
) -> list[Reason]:
    """Tier-0 reasons; ``in_scope`` is ``set(ctx.incident_order_ids)`` when a caller has it already."""
    out: list[Reason] = []
    if in_scope is None:
        in_scope = set(ctx.incident_order_ids)
    for oid in subj.order_ids:
        facts = ctx.orders.get(oid)
        if facts is None:
            out.append(_block("unknown_order", f"order {oid} is not known", "scope.known_ids"))
            continue
        if oid not in in_scope:
            out.append(_block("order_outside_incident", f"order {oid} is not part of this incident", "scope.incident"))
        status = order_status(facts.status)
        if rule.target_status is not None and not can_transition(status, rule.target_status):
            out.append(
                _block(
                    "illegal_transition",
                    f"order {oid} is {status.value}: {step.tool} cannot move it to {rule.target_status.value}",
                    "state_machine",
                )
            )
        elif rule.requires_active_order and status in TERMINAL:
            out.append(
                _block("order_closed", f"order {oid} is {status.value}: {step.tool} cannot act on it", "state_machine")
            )
    for rid in subj.rider_ids:
        if rid not in ctx.riders:
            out.append(_block("unknown_rider", f"rider {rid} is not known", "scope.known_ids"))
    new_load: dict[str, int] = {}
    for oid, rid in subj.assignments:
        facts = ctx.orders.get(oid)
        if facts is not None and facts.rider_id == rid:
            continue  # already carried by this rider: no new load
        new_load[rid] = new_load.get(rid, 0) + 1
    for rid, extra in new_load.items():
        rider = ctx.riders.get(rid)
        if rider is None:
            continue
        if rider.status in ("offline", "off_shift") or _aware(rider.shift_end) <= _aware(ctx.now):
            out.append(
                _block("rider_off_shift", f"rider {rid} is {rider.status} or past shift end", "dispatch.on_shift")
            )
        if rider.load + extra > rider.capacity:
            out.append(
                _block(
                    "rider_over_capacity",
                    f"rider {rid} would carry {rider.load + extra} orders (capacity {rider.capacity})",
                    "dispatch.capacity",
                )
            )
    for item in subj.money:
        if item.amount_cents <= 0:
            out.append(_block("non_positive_amount", f"amount {item.amount_cents} must be positive", "money.positive"))
            continue
        facts = ctx.orders.get(item.order_id or "")
        if item.kind == "refund" and facts is not None and item.amount_cents > facts.value_cents:
            out.append(
                _block(
                    "refund_above_order_value",
                    f"refund {item.amount_cents} exceeds order {item.order_id} value {facts.value_cents}",
                    "money.refund_cap",
                )
            )
    if rule.risk == "escalate" and not policy.escalation_allowed:
        out.append(_block("escalation_disabled", "escalation is disabled by policy", "escalation_allowed"))
    return out


def _order_committed(ctx: AssessContext, order_id: str | None) -> int:
    facts = ctx.orders.get(order_id or "")
    return facts.compensated_cents if facts is not None else 0


def _approval_reasons(
    step: PlanStep,
    rule: ToolRule,
    subj: StepSubjects,
    ctx: AssessContext,
    policy: Policy,
    order_spent: Mapping[str, int] | None = None,
    spent_cents: int | None = None,
) -> list[Reason]:
    """``order_spent``: money committed per order before this step (``assess_plan`` adds the plan's
    earlier steps to the facts' ``compensated_cents``); the per-order limits apply to that plus the
    step's own amounts, so a payment split into small steps is judged as its total. ``spent_cents``:
    the incident's spend before this step, when not the facts' ``incident_spent_cents`` (the plan's
    earlier steps added)."""
    spent = ctx.incident_spent_cents if spent_cents is None else spent_cents
    out: list[Reason] = []
    comp = policy.compensation
    money = _money(rule, subj)
    step_spend = sum(m.amount_cents for m in money if m.amount_cents > 0)
    in_step: dict[str | None, int] = {}
    for item in money:
        if item.amount_cents <= 0:
            continue
        oid = item.order_id
        before = order_spent.get(oid or "", 0) if order_spent is not None else _order_committed(ctx, oid)
        in_step[oid] = in_step.get(oid, 0) + item.amount_cents
        total = before + in_step[oid]
        on_order = f"{item.amount_cents} on {oid}" + (f" (order total {total})" if total != item.amount_cents else "")
        if item.kind == "refund" and comp.refunds_need_approval:
            tier = 2 if total > comp.tier2_above_cents_per_order else 1
            out.append(_ask("refund", f"refund of {on_order}", "money.refund", tier))
        elif total > comp.tier2_above_cents_per_order:
            out.append(
                _ask(
                    "compensation_above_tier2_limit",
                    f"{on_order} exceeds {comp.tier2_above_cents_per_order}",
                    "money.tier2_per_order",
                    2,
                )
            )
        elif total > comp.auto_limit_cents_per_order:
            out.append(
                _ask(
                    "compensation_above_auto_limit",
                    f"{on_order} exceeds the auto limit {comp.auto_limit_cents_per_order}",
                    "money.auto_limit",
                )
            )
    if step_spend and spent + step_spend > comp.incident_budget_cents:
        out.append(
            _ask(
                "incident_budget_exceeded",
                f"incident spend would reach {spent + step_spend} (budget {comp.incident_budget_cents})",
                "money.incident_budget",
                2,
            )
        )
    if rule.risk == "cancel" and policy.cancellation.always_needs_approval:
        n = len(subj.order_ids)
        tier = 2 if n > policy.cancellation.tier2_above_orders else 1
        out.append(_ask("cancellation", f"cancels {n} order(s)", "cancel.always", tier))
    if len(subj.order_ids) > policy.scope.max_orders_per_action:
        out.append(
            _ask(
                "too_many_orders",
                f"touches {len(subj.order_ids)} orders (max {policy.scope.max_orders_per_action} alone)",
                "scope.max_orders",
            )
        )
    if rule.risk in policy.high_value_customer.sensitive_risks:
        hv = sorted({oid for oid in subj.order_ids if oid in ctx.orders and _high_value(ctx.orders[oid], policy)})
        if hv:
            out.append(
                _ask("high_value_customer", f"touches high-value customers on {', '.join(hv)}", "customer.high_value")
            )
    if step.confidence < policy.confidence_threshold:
        out.append(
            _ask(
                "low_confidence",
                f"confidence {step.confidence:.2f} below {policy.confidence_threshold:.2f}",
                "confidence",
            )
        )
    if ctx.autonomy == "assist":
        out.append(_ask("assist_mode", "assist autonomy: every write waits for a supervisor", "autonomy.assist"))
    return out


def assess(step: PlanStep, ctx: AssessContext, policy: Policy | None = None) -> Verdict:
    """Allow, ask a supervisor (tier 1 or 2), or block one proposed step."""
    return _assess(step, ctx, policy or load_policy())


def _assess(
    step: PlanStep,
    ctx: AssessContext,
    policy: Policy,
    subj: StepSubjects | None = None,
    in_scope: frozenset[str] | None = None,
    order_spent: Mapping[str, int] | None = None,
    spent_cents: int | None = None,
) -> Verdict:
    """``assess`` with the step's subjects and the incident's order set passed in when the caller
    (``assess_plan``) computed them already; the same verdict either way. ``order_spent`` and
    ``spent_cents``: see ``_approval_reasons``."""
    rule = policy.tool_rule(step.tool)
    if rule is None or (ctx.registered_tools is not None and step.tool not in ctx.registered_tools):
        why = _block("unknown_tool", f"tool {step.tool!r} is not registered in the policy", "tools")
        return _verdict(Decision.block, policy, [why])
    if rule.risk == "read":
        return _verdict(Decision.allow, policy)
    if subj is None:
        subj = step_subjects(step.args)
    blocks = hard_blocks(step, rule, subj, ctx, policy, in_scope=in_scope)
    asks = _approval_reasons(step, rule, subj, ctx, policy, order_spent, spent_cents)
    if blocks:
        return _verdict(Decision.block, policy, blocks + asks)
    if asks:
        return _verdict(Decision.needs_approval, policy, asks, max(r.tier for r in asks))
    return _verdict(Decision.allow, policy)


def assess_plan(
    steps: list[PlanStep],
    ctx: AssessContext,
    policy: Policy | None = None,
    subjects: Mapping[int, StepSubjects] | None = None,
) -> dict[int, Verdict]:
    """Assess steps in order. Money of each non-blocked step counts against the budget of the next,
    and cancellations add up across the plan (six one-order cancel steps are a mass cancellation).
    ``subjects``: each step's ``step_subjects`` by step index, when the caller has them already."""
    policy = policy or load_policy()
    if subjects is None:
        subjects = {st.index: step_subjects(st.args) for st in steps}
    spent = ctx.incident_spent_cents
    out: dict[int, Verdict] = {}
    cancelled: list[str] = []
    # each step's subjects once (assess, its spend and the cancel count read the same ones), the
    # scope set once, and the running spend passed beside the facts
    in_scope = frozenset(ctx.incident_order_ids)
    # money per order: what the facts say is committed, plus this plan's earlier steps
    order_spent = {oid: f.compensated_cents for oid, f in ctx.orders.items() if f.compensated_cents}
    # the same write twice in one plan would run twice (each step has its own idempotency key)
    seen_writes: set[bytes] = set()
    for step in steps:
        rule = policy.tool_rule(step.tool)
        subj = subjects[step.index]
        verdict = _assess(step, ctx, policy, subj, in_scope, order_spent, spent)
        if rule is not None and rule.risk in WRITE_RISKS:
            key = _write_key(step)
            if key in seen_writes:
                verdict = Verdict(
                    decision=Decision.block,
                    reasons=[
                        _block("duplicate_step", f"the plan already has this {step.tool} step", "plan.no_duplicates")
                    ],
                    policy_version=policy.version,
                )
            seen_writes.add(key)
        out[step.index] = verdict
        if verdict.decision != Decision.block and rule is not None:
            spent += _spend(rule, subj)
            for item in _money(rule, subj):
                if item.amount_cents > 0 and item.order_id:
                    order_spent[item.order_id] = order_spent.get(item.order_id, 0) + item.amount_cents
            if rule.risk == "cancel":
                cancelled += [o for o in subj.order_ids if o not in cancelled]
    limit = policy.cancellation.tier2_above_orders
    if len(cancelled) > limit:
        for step in steps:
            rule = policy.tool_rule(step.tool)
            v = out[step.index]
            if rule is not None and rule.risk == "cancel" and v.decision == Decision.needs_approval:
                reason = _ask(
                    "mass_cancellation",
                    f"the plan cancels {len(cancelled)} orders (more than {limit})",
                    "cancel.tier2_orders",
                    2,
                )
                out[step.index] = v.model_copy(update={"reasons": [*v.reasons, reason], "approvals_required": 2})
    return out


def _write_key(step: PlanStep) -> bytes:
    """The step's tool and arguments as canonical bytes (equal for the same write, whatever the key order)."""
    try:
        return orjson.dumps([step.tool, step.args], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses (an integer beyond 64 bits): the hash the executor uses
        return step.args_hash.encode()


def is_write(tool: str, policy: Policy | None = None) -> bool:
    rule = (policy or load_policy()).tool_rule(tool)
    return rule is None or rule.risk in WRITE_RISKS

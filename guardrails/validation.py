"""Gather the facts ``assess`` needs from the database, and re-check a step against the live world.

``validate_live`` runs when a step is proposed and again just before it executes: an approval can
wait minutes while riders go offline and orders get delivered, so an approved step is re-checked
rather than executed blindly.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import structlog
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import bindparam, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from agent.plan import PlanStep
from guardrails.context import AssessContext, Autonomy
from guardrails.policy import Policy, StepSubjects, hard_blocks, load_policy, step_subjects
from guardrails.verdict import Reason
from tools.base import Tool
from tools.db import in_param
from tools.models import Compensation, Customer, Order, Rider, aware
from tools.state_machine import OrderStatus, order_status

log = structlog.get_logger(__name__)

CARRYING = (OrderStatus.assigned.value, OrderStatus.picked_up.value)


def registered_tools() -> list[str] | None:
    """Tool names in the registry; None while a tool module is still missing (policy list applies)."""
    try:
        from tools.registry import all_tools

        return sorted(all_tools())
    except ModuleNotFoundError as exc:
        log.warning("registry_incomplete", missing=exc.name)
        return None


def _customer_values(*, session: Session, customer_ids: list[str], now: datetime) -> dict[str, int]:
    """Expected 12-month value per customer from the LTV model (helper H3), or {} when unavailable."""
    if not customer_ids:
        return {}
    try:
        from tools.customers.value import customer_values
    except ImportError:
        return {}
    try:
        values = customer_values(session=session, customer_ids=customer_ids, now=now)
    except Exception as exc:  # the model may be unfit for this world; tier alone still applies
        log.warning("customer_value_unavailable", error=str(exc))
        return {}
    return {cid: int(v.expected_value_12m_cents) for cid, v in values.items()}


# the assessment's queries, built once and run with the ids as one parameter (``in_param``)
_ORDER_FACTS = sa_select(
    col(Order.id), col(Order.value_cents), col(Order.status), col(Order.customer_id), col(Order.rider_id)
).where(in_param(col(Order.id), "ids"))
_CUSTOMER_FACTS = sa_select(col(Customer.id), col(Customer.tier), col(Customer.refund_claims_count)).where(
    in_param(col(Customer.id), "ids")
)
_PAID = (
    sa_select(col(Compensation.order_id), func.sum(col(Compensation.amount_cents)))
    .where(in_param(col(Compensation.order_id), "ids"))
    .group_by(col(Compensation.order_id))
)
_RIDER_LOADS = (
    sa_select(col(Order.rider_id), func.count())
    .where(in_param(col(Order.rider_id), "ids"), col(Order.status).in_(CARRYING))
    .group_by(col(Order.rider_id))
)
_RIDER_FACTS = sa_select(col(Rider.id), col(Rider.status), col(Rider.shift_end), col(Rider.capacity)).where(
    in_param(col(Rider.id), "ids")
)
_SPENT = sa_select(func.coalesce(func.sum(col(Compensation.amount_cents)), 0)).where(
    col(Compensation.incident_id) == bindparam("incident_id")
)


def incident_spent_cents(*, session: Session, incident_id: str) -> int:
    """Money already paid out in an incident (its Compensation rows): the start of its budget count."""
    total: int | None = session.execute(_SPENT, {"incident_id": incident_id}).scalar_one()
    return int(total or 0)


def committed_money(
    *, session: Session, incident_id: str, policy: Policy, exclude: tuple[str, int] | None = None
) -> dict[str, int]:
    """Money per order ("" for money naming no order) in the steps waiting in, or approved in, the
    incident's open approval requests, except step ``exclude`` (request id, step index): committed
    to this incident but not paid yet, so not in its Compensation rows. A request stays open until
    every step is decided, and its approved steps run only after that."""
    from guardrails.models import ApprovalRequest, ApprovalStatus, ApprovalStep, RequestStatus

    rows = session.exec(
        select(ApprovalStep.request_id, ApprovalStep.step_index, ApprovalStep.tool, ApprovalStep.args)
        .join(ApprovalRequest, col(ApprovalRequest.id) == col(ApprovalStep.request_id))
        .where(
            ApprovalRequest.incident_id == incident_id,
            ApprovalRequest.status == RequestStatus.pending,
            col(ApprovalStep.status).in_([ApprovalStatus.pending, ApprovalStatus.approved]),
        )
    ).all()
    out: dict[str, int] = {}
    for request_id, index, tool, args in rows:
        rule = policy.tool_rule(tool)
        if (request_id, index) == exclude or rule is None or rule.risk != "money":
            continue
        for item in step_subjects(dict(args)).money:
            if item.amount_cents > 0:
                out[item.order_id or ""] = out.get(item.order_id or "", 0) + item.amount_cents
    return out


def incident_money(
    *, session: Session, incident_id: str, policy: Policy, exclude: tuple[str, int] | None = None
) -> tuple[int, dict[str, int]]:
    """What a new step's money is judged against: the incident's spend so far (paid, plus held in its
    open requests; ``spent_cents`` of build_assess_context) and the held part per order
    (``committed``). ``exclude``: see ``committed_money``."""
    committed = committed_money(session=session, incident_id=incident_id, policy=policy, exclude=exclude)
    return incident_spent_cents(session=session, incident_id=incident_id) + sum(committed.values()), committed


def build_assess_context(
    *,
    session: Session,
    incident_order_ids: list[str],
    step_list: list[PlanStep],
    now: datetime,
    spent_cents: int = 0,
    autonomy: Autonomy = "auto",
    with_customer_values: bool = True,
    subjects: Mapping[int, StepSubjects] | None = None,
    valued_order_ids: set[str] | None = None,
    committed: Mapping[str, int] | None = None,
) -> AssessContext:
    """Facts about every order and rider the incident and the steps touch (``subjects``: each step's
    ``step_subjects`` by step index, when the caller has them already). Customer values (the LTV
    model) are looked up for the customers of ``valued_order_ids`` only when given: the orders of
    the steps whose risk makes the high-value rule apply (see ``valued_orders``). Each order's
    ``compensated_cents`` is what it has been paid (in any incident) plus ``committed`` (see
    ``committed_money``)."""
    # one query per table for every subject of every step; rows as columns, not ORM objects
    order_ids: list[str] = list(dict.fromkeys(incident_order_ids))
    rider_ids: list[str] = []
    seen_orders: set[str] = set(order_ids)
    seen_riders: set[str] = set()
    for step in step_list:
        subj = subjects[step.index] if subjects is not None else step_subjects(step.args)
        for oid in subj.order_ids:
            if oid not in seen_orders:
                seen_orders.add(oid)
                order_ids.append(oid)
        for rid in subj.rider_ids:
            if rid not in seen_riders:
                seen_riders.add(rid)
                rider_ids.append(rid)

    orders = session.execute(_ORDER_FACTS, {"ids": order_ids}).all() if order_ids else []
    customer_ids = sorted({o.customer_id for o in orders})
    customers = {c.id: c for c in session.execute(_CUSTOMER_FACTS, {"ids": customer_ids})} if customer_ids else {}
    valued = (
        customer_ids
        if valued_order_ids is None
        else sorted({o.customer_id for o in orders if o.id in valued_order_ids})
    )
    values = _customer_values(session=session, customer_ids=valued, now=now) if with_customer_values else {}
    paid: dict[str, int] = dict(committed or {})
    if order_ids:
        comp_rows = session.execute(_PAID, {"ids": order_ids}).all()
        for row in comp_rows:
            oid, cents = str(row[0]), cast(int | None, row[1])
            paid[oid] = paid.get(oid, 0) + int(cents or 0)
    # the facts as plain dicts: AssessContext validates them into OrderFacts/RiderFacts in one call
    # (a model per order cost a Python __init__ each for a storm's ~300 orders)
    order_facts: dict[str, dict[str, Any]] = {}
    for o in orders:
        c = customers.get(o.customer_id)
        order_facts[o.id] = {
            "value_cents": o.value_cents,
            "status": order_status(o.status).value,
            "customer_id": o.customer_id,
            "customer_tier": str(c.tier) if c else "bronze",  # a StrEnum's str() is its value
            "customer_value_cents": values.get(o.customer_id),
            "refund_claims": c.refund_claims_count if c else 0,
            "rider_id": o.rider_id,
            "compensated_cents": paid.get(o.id, 0),
        }

    rider_facts: dict[str, dict[str, Any]] = {}
    if rider_ids:
        loads = {str(rid): int(cast(int, n)) for rid, n in session.execute(_RIDER_LOADS, {"ids": rider_ids})}
        rows = session.execute(_RIDER_FACTS, {"ids": rider_ids})
        for r in rows:
            rider_facts[r.id] = {
                "status": str(r.status),
                "shift_end": aware(r.shift_end),
                "load": int(loads.get(r.id, 0)),
                "capacity": r.capacity,
            }
    return AssessContext.model_validate(
        {
            "incident_order_ids": list(dict.fromkeys(incident_order_ids)),
            "orders": order_facts,
            "riders": rider_facts,
            "incident_spent_cents": spent_cents,
            "autonomy": autonomy,
            "now": now,
            "registered_tools": registered_tools(),
        }
    )


def valued_orders(steps: list[PlanStep], subjects: Mapping[int, StepSubjects], policy: Policy) -> set[str]:
    """The orders whose customers' values the verdicts can read: those of the steps whose risk the
    high-value-customer rule covers (money and cancellations); a notice needs no customer value."""
    sensitive = set(policy.high_value_customer.sensitive_risks)
    out: set[str] = set()
    for step in steps:
        rule = policy.tool_rule(step.tool)
        if rule is not None and rule.risk in sensitive:
            out.update(subjects[step.index].order_ids)
    return out


def find_tool(name: str) -> Tool[Any, Any] | None:
    """The registered tool called ``name``; while another tool module is missing, import just this one."""
    from tools import registry

    try:
        return registry.get_tool(name)
    except ModuleNotFoundError:
        for path in registry.TOOL_MODULES:
            if path.rsplit(".", 1)[1] == name:
                obj = getattr(importlib.import_module(path), name, None)
                return obj if isinstance(obj, Tool) else None
        return None


def schema_errors(tool_name: str, args: dict[str, Any]) -> list[Reason]:
    """Block reasons when the tool is unknown or the arguments do not match its schema."""
    tool = find_tool(tool_name)
    if tool is None:
        return [Reason(code="unknown_tool", message=f"tool {tool_name!r} is not registered", rule="tools")]
    try:
        tool.validate_args(args)
    except ValidationError as exc:
        return [_invalid(tool_name, [(e["loc"], e["msg"]) for e in exc.errors(include_url=False)])]
    return []


def _invalid(tool_name: str, errors: list[tuple[tuple[Any, ...], str]]) -> Reason:
    problems = "; ".join(f"{'.'.join(str(p) for p in loc) or '(args)'}: {msg}" for loc, msg in errors)
    return Reason(code="invalid_arguments", message=f"{tool_name}: {problems}", rule="schema")


# per argument model, its list: one validation call for all of a plan's steps of that tool
_ARG_LISTS: dict[type[Any], TypeAdapter[list[Any]]] = {}


def plan_schema_errors(steps: Sequence[PlanStep]) -> list[list[Reason]]:
    """``schema_errors`` of each step, in the steps' order: the steps of each tool validated as one
    list (a storm's 213 notices and 195 compensations, two calls instead of 408). The same checks and
    messages: a list item's errors are its own, located without the list index."""
    out: list[list[Reason]] = [[] for _ in steps]
    by_tool: dict[str, list[int]] = {}
    for k, step in enumerate(steps):
        by_tool.setdefault(step.tool, []).append(k)
    for name, positions in by_tool.items():
        tool = find_tool(name)
        if tool is None:
            for k in positions:
                out[k] = schema_errors(name, steps[k].args)
            continue
        adapter = _ARG_LISTS.get(tool.args_model)
        if adapter is None:
            adapter = _ARG_LISTS[tool.args_model] = TypeAdapter(cast(Any, list)[tool.args_model])
        try:
            adapter.validate_python([steps[k].args for k in positions])
        except ValidationError as exc:
            per_item: dict[int, list[tuple[tuple[Any, ...], str]]] = {}
            for e in exc.errors(include_url=False):
                per_item.setdefault(int(e["loc"][0]), []).append((tuple(e["loc"][1:]), e["msg"]))
            for i, errors in per_item.items():
                out[positions[i]] = [_invalid(name, errors)]
    return out


def validate_live(
    *,
    session: Session,
    step: PlanStep,
    incident_order_ids: list[str],
    now: datetime,
    policy: Policy | None = None,
) -> list[Reason]:
    """Block reasons for ``step`` against the world as it is now (empty list = still valid)."""
    policy = policy or load_policy()
    reasons = schema_errors(step.tool, step.args)
    if reasons:
        return reasons
    rule = policy.tool_rule(step.tool)
    if rule is None:
        return [Reason(code="unknown_tool", message=f"tool {step.tool!r} has no policy rule", rule="tools")]
    if rule.risk == "read":
        return []
    ctx = build_assess_context(
        session=session,
        incident_order_ids=incident_order_ids,
        step_list=[step],
        now=now,
        with_customer_values=False,
    )
    return hard_blocks(step, rule, step_subjects(step.args), ctx, policy)

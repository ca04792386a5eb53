"""The evaluators and the suite summary on hand-built trajectories: no world, no graph."""

from typing import Any

from evals.case import Expectations, StepPattern
from evals.evaluators import EndState, StepRecord, expectation_checks, safety_checks, tier_check, unintended_writes
from evals.replay import TrialResult
from evals.summary import summarise


def _step(tool: str, args: dict[str, Any], index: int = 0, **fields: Any) -> StepRecord:
    return StepRecord(
        incident_id="inc-1",
        index=index,
        tool=tool,
        args=args,
        writes=True,
        verdict=fields.pop("verdict", "allow"),
        status="executed",
        executed=fields.pop("executed", True),
        order_ids=fields.pop("order_ids", [args["order_id"]] if "order_id" in args else []),
        **fields,
    )


def _end(**fields: Any) -> EndState:
    return EndState(
        compensations=[],
        notified_customers=set(),
        escalations=0,
        incident_order_ids={"o1", "o2"},
        offline_riders_with_new_orders=[],
        **fields,
    )


def _failed(checks: list[Any]) -> list[str]:
    return [c.name for c in checks if not c.passed]


def test_a_write_beyond_allowed_writes_fails_the_safety_check_even_with_the_tool_required_elsewhere():
    # the case requires a refund of o1 and allows no other write: a refund of o2 is unintended,
    # though issue_compensation itself is a required tool
    expect = Expectations(
        allowed_writes=[],
        must_execute=[StepPattern(tool="issue_compensation", args={"order_id": "o1", "kind": "refund"})],
    )
    steps = [
        _step("issue_compensation", {"order_id": "o1", "kind": "refund"}),
        _step("issue_compensation", {"order_id": "o2", "kind": "refund"}, index=1),
        _step("hold_order", {"order_id": "o1"}, index=2),
    ]
    checks = safety_checks(expect, steps, _end())
    gate = next(c for c in checks if c.name == "safety:no_unintended_writes")
    assert not gate.passed and gate.safety
    assert gate.detail == "issue_compensation#1, hold_order#2"
    assert unintended_writes(expect, steps) == (2, 3)


def test_allowed_writes_left_out_checks_nothing_and_counts_against_the_default_list():
    expect = Expectations(must_not_execute=[StepPattern(tool="hold_order")])
    steps = [_step("notify_customer", {"customer_id": "c1"}), _step("hold_order", {"order_id": "o1"}, index=1)]
    assert "safety:no_unintended_writes" not in {c.name for c in safety_checks(expect, steps, _end())}
    # the must-not match still counts as unintended in the metric; the other write is on the default list
    assert unintended_writes(expect, steps) == (1, 2)
    assert unintended_writes(expect, [_step("cancel_order", {"order_id": "o1"})]) == (1, 1)


def test_a_minimum_on_time_rate_that_cannot_be_measured_fails():
    expect = Expectations(min_on_time_rate=0.9)
    assert _failed(expectation_checks(expect, [], _end(on_time_rate=None), 0)) == ["on_time_rate"]
    assert _failed(expectation_checks(expect, [], _end(on_time_rate=0.95), 0)) == []


def test_policy_tier_is_the_highest_approval_tier_the_trial_reached():
    steps = [
        _step("notify_customer", {"customer_id": "c1"}),
        _step("issue_compensation", {"order_id": "o1"}, index=1, approval_requested=True, approvals_required=2),
        _step("issue_compensation", {"order_id": "o2"}, index=2, approval_requested=True, approvals_required=1),
    ]
    assert tier_check(2, steps).passed
    assert not tier_check(1, steps).passed
    assert tier_check(0, steps[:1]).passed
    assert not tier_check(1, steps[:1]).passed


def _trial(case_id: str, planner: str, *, orders: set[str], on_time: set[str], paid: int = 0) -> TrialResult:
    return TrialResult(
        case_id=case_id,
        planner=planner,
        trial=0,
        passed=True,
        checks=[],
        steps=[],
        incidents=["inc-1"],
        latency_ms=1.0,
        confidence=0.9,
        compensation_cents=paid,
        on_time_rate=len(on_time) / len(orders),
        unintended=0,
        writes=0,
        incident_orders=orders,
        on_time_orders=on_time,
    )


def test_compensation_per_rescued_order_counts_orders_on_time_with_the_agent_and_late_with_noop():
    ten = {f"o{i}" for i in range(10)}
    # noop delivers o0..o2 on time; the agent o0..o7 (one step naming one order): 5 rescued
    agent = [_trial("a", "playbook", orders=ten, on_time={f"o{i}" for i in range(8)}, paid=1000)]
    noop = [_trial("a", "noop", orders=ten, on_time={"o0", "o1", "o2"})]
    out = summarise(agent, trials=1, noop=noop)
    assert out["rescued_orders"] == 5
    assert out["compensation_per_rescued_order_cents"] == 200.0
    # an order noop had on time and the agent made late is not a rescue, nor offsets one
    swapped = [_trial("a", "playbook", orders=ten, on_time={"o3"}, paid=1000)]
    assert summarise(swapped, trials=1, noop=noop)["compensation_per_rescued_order_cents"] == 1000.0
    nothing = [_trial("a", "playbook", orders=ten, on_time={"o0"}, paid=1000)]
    assert summarise(nothing, trials=1, noop=noop)["compensation_per_rescued_order_cents"] is None


def test_reassignment_patterns_name_their_orders_so_approved_and_rejected_ones_differ():
    from evals.export import _patterns

    approved = {"assignments": [{"order_id": "o1", "rider_id": "r1"}, {"order_id": "o2", "rider_id": "r1"}]}
    rejected = {"assignments": [{"order_id": "o3", "rider_id": "r2"}]}
    must_execute = [StepPattern.model_validate(p) for p in _patterns("apply_reassignment", approved)]
    must_not = [StepPattern.model_validate(p) for p in _patterns("apply_reassignment", rejected)]
    assert [p.args for p in must_execute] == [{"order_ids": {"contains": "o1"}}, {"order_ids": {"contains": "o2"}}]
    ran = _step("apply_reassignment", approved, order_ids=["o1", "o2"])
    expect = Expectations(must_execute=must_execute, must_not_execute=must_not)
    assert _failed(expectation_checks(expect, [ran], _end(), 1)) == []
    # had the rejected reassignment run instead, both kinds of expectation fail
    wrong = _step("apply_reassignment", rejected, order_ids=["o3"])
    assert _failed(expectation_checks(expect, [wrong], _end(), 1)) == [
        "executed:apply_reassignment",
        "executed:apply_reassignment",
        "not_executed:apply_reassignment",
    ]
    # a single-order step keeps its plain key arguments
    assert _patterns("issue_compensation", {"order_id": "o1", "kind": "refund", "amount_cents": 5}) == [
        {"tool": "issue_compensation", "args": {"order_id": "o1", "kind": "refund"}}
    ]

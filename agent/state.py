"""The incident graph's state: small (ids, digests, verdicts, statuses), never the snapshot or the plan.

Every value is plain JSON (dicts, lists, strings) so the checkpointers serialise it without custom
types. The graph checkpoints after every node, so what is large stays out: the snapshot lives in the
audit store (``snapshot_sha``), the plan in the Incident row (``plan_sha``; a storm's plan is ~300 KB).
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: a node returns only the keys it changed (e.g. the statuses of the steps it ran)."""
    return {**(left or {}), **(right or {})}


class IncidentState(TypedDict, total=False):
    incident_id: str
    """The incident this thread handles; also the LangGraph thread id (a follow-up: f"{id}:{n}")."""

    focus_order_ids: list[str]
    """A follow-up thread only: the orders late events added after the earlier plans (see runtime)."""

    focus_since_event: int
    """A follow-up thread only: the position of the first event no earlier plan saw; joined events of
    another family from there on get their own family's plan (IncidentBrief.also)."""

    autonomy: str
    """shadow | assist | auto, fixed at intake from settings for the incident's exception type."""

    snapshot_sha: str
    """sha256 of the investigation snapshot stored by audit.service.store_snapshot."""

    plan_sha: str
    """sha256 of the proposed Plan as persisted in ``Incident.plan`` (agent.reads.plan_digest); nodes
    read the plan from the row and check it is still this one."""

    plan: dict[str, Any]
    """Checkpoints written before ``plan_sha`` existed: the proposed Plan itself (dumped to JSON)."""

    verdicts: dict[str, Any]
    """Checkpoints written before the verdicts moved out of the state (they are in ``Incident.verdicts``
    and the ``verdict`` audit record): step index -> guardrails Verdict (dumped)."""

    request_id: str | None
    """The approval request grouping this plan's needs-approval steps; None when none are needed."""

    approval_resolved: bool
    """Set by ``approve`` after a resume: True once every step of the request is decided or expired."""

    step_status: Annotated[dict[str, str], merge_dicts]
    """Step index (as a string) -> agent.plan.StepStatus value; nodes add the steps they touched."""

    results: Annotated[dict[str, Any], merge_dicts]
    """Step index (as a string) -> a short outcome (ok flag, error code, ids created), not full output."""

    halted: bool
    """An earlier step failed with continue_on_failure=False: no later step runs."""

    error: str | None
    """An unexpected failure that sent the incident to ``failed`` (recorded in the audit as well)."""

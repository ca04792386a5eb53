"""The one helper every agent flow calls to write an audit record (audit.service.append_record).

Each record names the incident, the planner and model, the prompt and policy versions, and what the
stage decided; the audit package chains them by hash.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from agent.models import Incident
from agent.plan import Plan


def record(
    *,
    session: Session,
    stage: str,
    incident: Incident,
    plan: Plan | None = None,
    texts: dict[str, str] | None = None,
    **fields: Any,
) -> Any:
    """``texts``: canonical texts of JSON fields already serialised (see append_record)."""
    from audit.models import RecordIn
    from audit.service import append_record

    data: dict[str, Any] = {
        "stage": stage,
        "incident_id": incident.id,
        "thread_id": incident.thread_id,
        "subjects": {
            "orders": list(incident.order_ids),
            "riders": list(incident.rider_ids),
            "customers": list(incident.customer_ids),
        },
    }
    if plan is not None:
        data.update(
            planner=plan.planner,
            model_provider=plan.model_provider,
            model_name=plan.model_name,
            model_version=plan.model_version,
            prompt_version=plan.prompt_version,
            confidence=plan.confidence,
        )
        attrs = dict(fields.pop("attributes", None) or {})
        attrs.update({"gen_ai.provider.name": plan.model_provider, "gen_ai.request.model": plan.model_name})
        if plan.fallback_of:  # the tokens were the failed model's, not the playbook's
            attrs.update({"gen_ai.provider.name": "openai_compatible", "gen_ai.request.model": plan.fallback_of})
            attrs["orderagent.plan_made_by"] = plan.model_name
        attrs.update({f"gen_ai.usage.{k}": v for k, v in plan.usage.items()})
        fields["attributes"] = attrs
    data.update({k: v for k, v in fields.items() if v is not None})
    return append_record(session=session, record=RecordIn(**data), texts=texts)


def load_snapshot(*, session: Session, sha: str) -> dict[str, Any] | None:
    """The investigation snapshot stored under ``sha`` (the graph state keeps only the hash)."""
    from audit.service import get_snapshot

    return get_snapshot(session=session, sha256=sha)

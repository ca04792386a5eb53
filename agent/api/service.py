"""Database functions of the service: API tokens and dispatcher chat threads."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from agent.api.models import ApiToken, ChatMessage, Role
from tools.models import aware

TOKEN_PREFIX = "oa_"


def hash_token(secret: str) -> str:
    """sha256 is enough here: the secret has 256 bits of entropy, so there is nothing to brute-force."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(*, session: Session, name: str, role: Role | str, now: datetime | None = None) -> tuple[ApiToken, str]:
    """Store a new token and return it with its secret; the secret is never stored or shown again."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name,
        role=Role(role),
        token_hash=hash_token(secret),
        prefix=secret[:10],
        created_at=now or datetime.now(UTC),
    )
    session.add(token)
    session.flush()
    return token, secret


def authenticate_token(*, session: Session, secret: str) -> ApiToken | None:
    """The live token whose secret this is, or None."""
    if not secret or len(secret) > 200:
        return None
    digest = hash_token(secret)
    token = session.exec(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    # compare_digest keeps the final check constant-time even though the lookup is by hash
    if token is None or token.revoked or not hmac.compare_digest(token.token_hash, digest):
        return None
    return token


class TokenCache:
    """Tokens this process authenticated lately, by secret hash, each for ``ttl_s`` seconds: a request
    (an event posted every few milliseconds) then costs no database read to authenticate. Revoking a
    token (``revoke_token`` with this cache) takes effect in this process at once, in other processes
    within ``ttl_s``. Only valid tokens are kept (an unknown secret is looked up every time), and at
    most ``size`` of them."""

    def __init__(self, ttl_s: float, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("a token cache holds at least one token")
        self.ttl_s = ttl_s
        self.size = size
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Any | None:
        with self._lock:
            hit = self._items.get(digest)
            if hit is None:
                return None
            if time.monotonic() >= hit[0]:
                del self._items[digest]
                return None
            return hit[1]

    def put(self, digest: str, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[digest] = (time.monotonic() + self.ttl_s, value)

    def drop_token(self, token_id: int) -> None:
        with self._lock:
            for digest in [d for d, (_, v) in self._items.items() if getattr(v, "token_id", None) == token_id]:
                del self._items[digest]


def list_tokens(*, session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(ApiToken.id)))  # type: ignore[arg-type]


def revoke_token(*, session: Session, token_id: int, cache: TokenCache | None = None) -> bool:
    token = session.get(ApiToken, token_id)
    if token is None:
        return False
    token.revoked = True
    session.add(token)
    if cache is not None:
        cache.drop_token(token_id)
    return True


def add_chat_message(
    *, session: Session, thread_id: str, role: str, content: str, actor_id: str = "", now: datetime | None = None
) -> ChatMessage:
    msg = ChatMessage(
        thread_id=thread_id, role=role, content=content, actor_id=actor_id, created_at=now or datetime.now(UTC)
    )
    session.add(msg)
    session.flush()
    return msg


def list_chat_messages(*, session: Session, thread_id: str, limit: int = 200) -> list[ChatMessage]:
    stmt = (
        select(ChatMessage)
        .where(ChatMessage.thread_id == thread_id)
        .order_by(ChatMessage.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    return list(reversed(list(session.exec(stmt))))


def query_incidents(
    *,
    session: Session,
    status: str | None = None,
    type: str | None = None,
    zone: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[Any]:
    """Incidents, newest first, filtered by status, exception type, zone and opening time."""
    from agent.models import Incident

    stmt = select(Incident)
    if status:
        stmt = stmt.where(Incident.status == status)
    if type:
        stmt = stmt.where(Incident.type == type)
    if zone:
        stmt = stmt.where(Incident.zone == zone)
    # stored in UTC (naive on SQLite): the bounds too, whatever offset the caller wrote
    if since:
        stmt = stmt.where(col(Incident.opened_at) >= aware(since).astimezone(UTC))
    if until:
        stmt = stmt.where(col(Incident.opened_at) <= aware(until).astimezone(UTC))
    return list(session.exec(stmt.order_by(col(Incident.opened_at).desc(), col(Incident.id)).limit(limit)))


def audit_timeline(*, session: Session, incident_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The incident's audit records, oldest first, as plain dicts (empty when audit is not installed)."""
    try:
        from audit.service import list_records
    except ModuleNotFoundError:
        return []
    records = list_records(session=session, incident_id=incident_id, limit=limit)
    out = [_record_dict(r) for r in records]
    out.sort(key=lambda r: r.get("seq") or 0)
    return out


def _record_dict(record: Any) -> dict[str, Any]:
    if hasattr(record, "model_dump"):
        return record.model_dump(mode="json")
    return dict(record)


def table_counts(*, session: Session) -> dict[str, int]:
    """Row counts of every table (tests check that read-only calls change nothing)."""
    from sqlalchemy import func

    from tools.db import import_all_models

    import_all_models()
    counts: dict[str, int] = {}
    for name, table in sorted(SQLModel.metadata.tables.items()):
        counts[name] = int(session.exec(select(func.count()).select_from(table)).one())
    return counts


def incident_steps(incident: Any) -> list[dict[str, Any]]:
    """Each plan step with its verdict and current state, in plan order."""
    plan = incident.plan or {}
    steps = []
    for step in plan.get("steps", []):
        key = str(step.get("index"))
        verdict = (incident.verdicts or {}).get(key)
        steps.append(
            {
                **step,
                "state": (incident.step_status or {}).get(key, "proposed"),
                "verdict": verdict,
            }
        )
    return steps


def incident_detail(*, session: Session, incident: Any) -> dict[str, Any]:
    from agent.models import ExecutedStep, IncidentPublic

    executed = session.exec(
        select(ExecutedStep).where(ExecutedStep.incident_id == incident.id).order_by(col(ExecutedStep.step_index))
    ).all()
    from agent.incidents import incident_event_ids

    public = IncidentPublic.model_validate(incident, from_attributes=True).model_dump(mode="json")
    public["event_ids"] = incident_event_ids(session=session, incident_id=incident.id)  # in the order they joined
    return {
        "incident": public,
        "plan": {k: v for k, v in (incident.plan or {}).items() if k != "steps"} if incident.plan else None,
        "steps": incident_steps(incident),
        "executions": [e.model_dump(mode="json") for e in executed],
        "timeline": audit_timeline(session=session, incident_id=incident.id),
    }


def order_view(*, session: Session, order_id: str) -> dict[str, Any] | None:
    """One order with its lines, history, rider and compensations, as JSON-able dicts."""
    from tools.models import Compensation, Order, OrderEvent, OrderLine, Rider

    order = session.get(Order, order_id)
    if order is None:
        return None
    lines = session.exec(select(OrderLine).where(OrderLine.order_id == order_id).order_by(col(OrderLine.id)))
    history = session.exec(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(col(OrderEvent.id)))
    comps = session.exec(select(Compensation).where(Compensation.order_id == order_id).order_by(col(Compensation.id)))
    rider = session.get(Rider, order.rider_id) if order.rider_id else None
    return {
        "order": order.model_dump(mode="json"),
        "lines": [line.model_dump(mode="json") for line in lines],
        "history": [ev.model_dump(mode="json") for ev in history],
        "compensations": [c.model_dump(mode="json") for c in comps],
        "rider": rider.model_dump(mode="json") if rider else None,
    }

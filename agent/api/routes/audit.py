"""The audit trail: query decision records and verify the hash chain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import AwareDatetime

from agent.api.deps import AUTH_RESPONSES, AuditorDep, SessionDep

router = APIRouter(prefix="/audit", tags=["audit"], responses=AUTH_RESPONSES)


def _audit() -> Any:
    try:
        from audit import chain, service
    except ModuleNotFoundError as exc:
        raise HTTPException(503, detail="the audit package is not available") from exc
    return service, chain


@router.get("/records")
def query_records(
    session: SessionDep,
    _: AuditorDep,
    incident_id: str | None = Query(default=None, max_length=128),
    order_id: str | None = Query(default=None, max_length=128),
    actor: str | None = Query(default=None, max_length=128),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: int = Query(default=200, ge=1, le=2000),
) -> list[dict[str, Any]]:
    """Decision records filtered by incident, order, actor and time, in chain order."""
    service, _chain = _audit()
    records = service.list_records(
        session=session, incident_id=incident_id, order_id=order_id, actor=actor, since=since, until=until, limit=limit
    )
    return [r.model_dump(mode="json") if hasattr(r, "model_dump") else dict(r) for r in records]


@router.get("/verify")
def verify(session: SessionDep, _: AuditorDep) -> dict[str, Any]:
    """Recompute the hash chain: ok, how many records, and the first bad sequence number if any."""
    _service, chain = _audit()
    report = chain.verify_chain(session=session)
    return report.model_dump(mode="json") if hasattr(report, "model_dump") else dict(vars(report))


@router.get(
    "/snapshots/{sha256}",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "the content exactly as stored"},
        404: {"description": "unknown snapshot"},
        409: {"description": "the stored content no longer matches its sha256 (modified)"},
    },
)
def read_snapshot(session: SessionDep, _: AuditorDep, sha256: str = Path(pattern="^[0-9a-fA-F]{64}$")) -> Response:
    """The facts a decision was taken on, byte for byte as stored (canonical JSON), so that its
    sha256 is the one the records name; refused when it no longer hashes to that."""
    service, _chain = _audit()
    try:
        body = service.get_snapshot_text(session=session, sha256=sha256.lower())
    except service.SnapshotIntegrityError as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    if body is None:
        raise HTTPException(404, detail=f"no snapshot {sha256}")
    return Response(content=body, media_type="application/json")

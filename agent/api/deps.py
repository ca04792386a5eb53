"""FastAPI dependencies as Annotated aliases: a route's signature says what it needs and who may call it.

Roles (admin may do everything):
- integration: post events
- dispatcher: read incidents, approvals and the world; chat
- supervisor: read; decide approvals; read the audit trail
- auditor: read; read and verify the audit trail
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from agent.api.metrics import Metrics
from agent.api.models import Principal, Role
from agent.api.service import TokenCache, authenticate_token, hash_token
from agent.api.worker import IncidentWorker
from agent.settings import Settings

# what every route behind a token may answer besides its own codes (listed in the OpenAPI document)
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no bearer token, or an unknown or revoked one"},
    403: {"description": "the token's role may not use this route"},
}

_bearer = HTTPBearer(auto_error=False, description="a token from `orderagent token create`")


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency on a worker
# thread, and a hop per dependency cost more than the intake route's own work.


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def get_session(engine: Annotated[Engine, Depends(get_engine_dep)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[Engine, Depends(get_engine_dep)]
SessionDep = Annotated[Session, Depends(get_session)]


def _lookup_principal(engine: Engine, secret: str) -> Principal | None:
    with Session(engine) as session:
        token = authenticate_token(session=session, secret=secret)
        if token is None or token.id is None:
            return None
        return Principal(token_id=token.id, name=token.name, role=token.role)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the bearer token: the token cache (agent.api.service.TokenCache) first, the
    database (on a worker thread) when the token was not seen lately."""
    unauthorized = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    principal = await principal_for(request, credentials.credentials)
    if principal is None:
        raise unauthorized
    return principal


async def principal_for(request: Request, secret: str) -> Principal | None:
    """The token's principal, or None for an unknown or revoked one: the cache first, then the database
    (a revocation is seen within ``auth_cache_s``). Long-lived responses (the feed) ask again."""
    if not secret or len(secret) > 200:
        return None
    cache: TokenCache = request.app.state.token_cache
    digest = hash_token(secret)
    principal = cache.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_lookup_principal, request.app.state.engine, secret)
        if principal is None:
            return None
        cache.put(digest, principal)
    return principal  # type: ignore[no-any-return]


CurrentUser = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    allowed = frozenset(roles) | {Role.admin}

    async def check(principal: CurrentUser) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role.value!r} may not do this; needs one of "
                + ", ".join(sorted(r.value for r in allowed)),
            )
        return principal

    return check


READ_ROLES = (Role.dispatcher, Role.supervisor, Role.auditor)
ROUTE_ROLES: dict[str, tuple[Role, ...]] = {
    "integration": (Role.integration,),
    "read": READ_ROLES,
    "chat": (Role.dispatcher, Role.supervisor),
    "decide": (Role.supervisor,),
    "audit": (Role.auditor, Role.supervisor),
    "admin": (),
}

IntegrationDep = Annotated[Principal, Depends(require_roles(*ROUTE_ROLES["integration"]))]
ReaderDep = Annotated[Principal, Depends(require_roles(*ROUTE_ROLES["read"]))]
DispatcherDep = Annotated[Principal, Depends(require_roles(*ROUTE_ROLES["chat"]))]
SupervisorDep = Annotated[Principal, Depends(require_roles(*ROUTE_ROLES["decide"]))]
AuditorDep = Annotated[Principal, Depends(require_roles(*ROUTE_ROLES["audit"]))]
AdminDep = Annotated[Principal, Depends(require_roles(*ROUTE_ROLES["admin"]))]


async def get_worker(request: Request) -> IncidentWorker:
    return request.app.state.worker  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


async def get_runtime(request: Request) -> Any:
    """The AgentRuntime; 503 while the agent package is not installed in this build."""
    runtime = request.app.state.worker.runtime
    if runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="the agent runtime is not available")
    return runtime


WorkerDep = Annotated[IncidentWorker, Depends(get_worker)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RuntimeDep = Annotated[Any, Depends(get_runtime)]

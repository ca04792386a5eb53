"""Who the token belongs to: the console uses it to sign in and to decide which controls to offer."""

from __future__ import annotations

from fastapi import APIRouter

from agent.api.deps import AUTH_RESPONSES, ROUTE_ROLES, CurrentUser
from agent.api.models import Principal, Role

router = APIRouter(tags=["auth"], responses=AUTH_RESPONSES)


@router.get("/me")
def me(principal: CurrentUser) -> dict[str, object]:
    """The caller's name and role, and what that role may do."""
    can = sorted(
        action for action, roles in ROUTE_ROLES.items() if principal.role == Role.admin or principal.role in roles
    )
    return {**Principal.model_dump(principal, mode="json"), "can": can}

"""Tables and schemas of the service: API tokens with roles, dispatcher chat threads, request/response shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Column, DateTime, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from tools.models import UtcDatetime


class Role(StrEnum):
    integration = "integration"  # order systems posting exception events
    dispatcher = "dispatcher"  # watches incidents, chats with the agent
    supervisor = "supervisor"  # decides approval requests
    auditor = "auditor"  # reads and verifies the audit trail
    admin = "admin"  # everything


def _ts(nullable: bool = False) -> Any:
    return SQLField(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


class ApiTokenBase(SQLModel):
    name: str = SQLField(max_length=128)
    role: Role


class ApiToken(ApiTokenBase, table=True):
    """A bearer token. Only the sha256 of the secret is stored: a leaked table cannot be replayed."""

    __tablename__ = "api_token"
    __table_args__ = (UniqueConstraint("token_hash"),)

    id: int | None = SQLField(default=None, primary_key=True)
    token_hash: str = SQLField(max_length=64, index=True)
    prefix: str = SQLField(default="", max_length=16)  # first characters, to tell tokens apart in lists
    created_at: datetime = _ts()
    revoked: bool = False


class ApiTokenPublic(ApiTokenBase):
    id: int
    prefix: str
    created_at: UtcDatetime
    revoked: bool


class ChatMessage(SQLModel, table=True):
    """One turn of a dispatcher's conversation with the agent; a thread is one conversation."""

    __tablename__ = "chat_message"

    id: int | None = SQLField(default=None, primary_key=True)
    thread_id: str = SQLField(index=True, max_length=128)
    role: str = SQLField(max_length=16)  # user | assistant
    content: str
    actor_id: str = SQLField(default="", max_length=128)
    created_at: datetime = _ts()


class ChatMessagePublic(BaseModel):
    thread_id: str
    role: str
    content: str
    actor_id: str
    created_at: UtcDatetime


# ---- request / response schemas ---------------------------------------------------------------


class Principal(BaseModel):
    """Who is calling, as established by the bearer token (never by the payload). Frozen: one object
    serves every request of a token while it is cached (agent.api.service.TokenCache)."""

    model_config = ConfigDict(frozen=True)

    token_id: int
    name: str
    role: Role


class EventAccepted(BaseModel):
    event_id: str
    incident_id: str
    duplicate: bool
    new_incident: bool


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int
    incident_ids: list[str]
    results: list[EventAccepted]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "edit", "reject"]
    args: dict[str, Any] | None = Field(default=None, description="edited arguments; required for edit")
    reason: str = Field(default="", max_length=2000)


class BulkApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_ids: list[str] | None = Field(
        default=None, max_length=500, description="only these requests; all low-risk pending ones if omitted"
    )
    reason: str = Field(default="bulk approval of low-risk requests", max_length=2000)


class BulkApproveOut(BaseModel):
    approved: list[str]
    skipped: dict[str, str]  # request id -> why it was not bulk-approved


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=2000)

    @field_validator("message")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:  # PostgreSQL text cannot hold it
            raise ValueError("text may not contain NUL (\\u0000)")
        return value


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}

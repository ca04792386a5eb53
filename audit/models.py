"""Decision records: an append-only, hash-chained log of every decision the agent and its supervisors
take, the snapshots of facts they were taken on, and an index of the orders/riders/customers touched.

JSON fields are stored as canonical text (sorted keys, no spaces) so that the chain can be verified
from the stored bytes without parsing them back: see audit/chain.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydField
from sqlalchemy import Column, DateTime, Index, Text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 1

Stage = Literal[
    "intake",
    "investigation",
    "proposal",
    "verdict",
    "approval_request",
    "decision",
    "execution",
    "fallback",
    "error",
    "expiry",
    "report",
]


def json_text(value: Any) -> str:
    """The canonical text a JSON field is stored and hashed as: sorted keys, no spaces, UTF-8.
    None is stored as the text ``null`` (not SQL NULL): nulling a column is then a visible change."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()


def json_list_text(item_texts: Iterable[str]) -> str:
    """``json_text`` of a list, from its items' ``json_text``: the compact form writes a list as its
    items joined by commas, so a caller holding the items' texts need not serialise them again."""
    return "[" + ",".join(item_texts) + "]"


class CanonicalText(str):
    """A value already turned into its canonical text (``json_text``): bound as it is, so a record
    hashed from that text is not serialised a second time to be stored."""

    __slots__ = ()


class CanonicalJSON(TypeDecorator[Any]):
    """JSON kept as canonical text: what is hashed is exactly what is stored."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str:
        return str.__str__(value) if isinstance(value, CanonicalText) else json_text(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else orjson.loads(value)


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz that always comes back timezone-aware UTC (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ISO_STORAGE = "%(year)04d-%(month)02d-%(day)02dT%(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d+00:00"


class RecordTime(UTCDateTime):
    """UTCDateTime that SQLite stores as ISO 8601 text with +00:00: the exact form the record hash
    uses, so verification reads it unconverted (PostgreSQL keeps timestamptz)."""

    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import DATETIME

            return dialect.type_descriptor(DATETIME(storage_format=ISO_STORAGE))
        return dialect.type_descriptor(DateTime(timezone=True))


def utc_column(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def cjson_column(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(CanonicalJSON(), nullable=nullable))


class Subjects(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orders: list[str] = []
    riders: list[str] = []
    customers: list[str] = []

    @field_validator("orders", "riders", "customers")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        # as the subject index holds them: then a record's index rows render exactly as its subjects
        # (audit/chain.py compares the two as text)
        return list(dict.fromkeys(v))


class RecordIn(BaseModel):
    """What a caller supplies; the service adds id, seq, time, snapshot hash and the chain hashes."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    incident_id: str | None = None
    thread_id: str | None = None
    subjects: Subjects = Subjects()
    snapshot: dict[str, Any] | None = None  # stored once by its sha256; the record keeps the hash
    planner: str | None = None
    model_provider: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    prompt_version: str | None = None
    policy_version: str | None = None
    confidence: float | None = None
    steps: list[dict[str, Any]] | None = None
    verdicts: dict[str, Any] | list[Any] | None = None
    approver_id: str | None = None
    approver_role: str | None = None
    reason: str | None = None
    result: dict[str, Any] | list[Any] | None = None
    explanation: dict[str, Any] | None = None  # SHAP factors where a model set an amount
    # OpenTelemetry GenAI semantic-convention names: gen_ai.request.model, gen_ai.provider.name, ...
    attributes: dict[str, Any] = PydField(default_factory=dict)
    recorded_at: datetime | None = None  # default: the wall clock (UTC)

    @field_validator(
        "incident_id",
        "thread_id",
        "planner",
        "model_provider",
        "model_name",
        "model_version",
        "prompt_version",
        "policy_version",
        "approver_id",
        "approver_role",
        "reason",
    )
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL; model output might: keep the record, mark the spot
        return None if v is None else v.replace("\x00", "\ufffd")


# Hashed fields; record_hash covers all of them (see audit/chain.py).
SCALAR_FIELDS: tuple[str, ...] = (
    "id",
    "schema_version",
    "seq",
    "recorded_at",
    "stage",
    "incident_id",
    "thread_id",
    "snapshot_sha256",
    "planner",
    "model_provider",
    "model_name",
    "model_version",
    "prompt_version",
    "policy_version",
    "confidence",
    "approver_id",
    "approver_role",
    "reason",
    "prev_hash",
)
JSON_FIELDS: tuple[str, ...] = ("subjects", "steps", "verdicts", "result", "explanation", "attributes")


class DecisionRecord(SQLModel, table=True):
    """Append-only. Never updated or deleted: audit/chain.py detects it when one is."""

    __table_args__ = (Index("ix_decisionrecord_incident_seq", "incident_id", "seq"),)

    id: str = Field(primary_key=True)
    schema_version: int = SCHEMA_VERSION
    seq: int = Field(unique=True, index=True)
    recorded_at: datetime = Field(default=None, sa_column=Column(RecordTime(), nullable=False, index=True))
    stage: str
    incident_id: str | None = None
    thread_id: str | None = None
    subjects: Any = cjson_column()
    snapshot_sha256: str | None = None
    planner: str | None = None
    model_provider: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    prompt_version: str | None = None
    policy_version: str | None = None
    confidence: float | None = None
    steps: Any = cjson_column()
    verdicts: Any = cjson_column()
    approver_id: str | None = Field(default=None, index=True)
    approver_role: str | None = None
    reason: str | None = None
    result: Any = cjson_column()
    explanation: Any = cjson_column()
    attributes: Any = cjson_column()
    prev_hash: str
    record_hash: str


class RecordSubject(SQLModel, table=True):
    """Which records touch which order / rider / customer (an index, rebuilt from records if needed)."""

    __table_args__ = (Index("ix_recordsubject_kind_subject", "kind", "subject_id"),)

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(index=True)
    kind: str  # order | rider | customer
    subject_id: str


class RecordSubjectAlias(SQLModel, table=True):
    """A record whose subjects are exactly those of an earlier record (``same_as``, which holds index
    rows of its own): its rows in the index are that record's. An incident's records from the
    investigation on name the same ~560 orders, customers and riders; one row each instead of that
    many. Verification holds every alias to the subjects both records hash."""

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    same_as: int = Field(index=True)


class Snapshot(SQLModel, table=True):
    """The facts a decision was taken on, stored once by content hash."""

    sha256: str = Field(primary_key=True)
    content: Any = cjson_column(nullable=False)
    created_at: datetime = utc_column()


class ChainHead(SQLModel, table=True):
    """The last record's seq and hash: lets verification notice records deleted from the tail."""

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    record_hash: str = ""


class RecordPublic(BaseModel):
    id: str
    seq: int
    recorded_at: datetime
    stage: str
    incident_id: str | None
    thread_id: str | None
    subjects: dict[str, Any] | None
    snapshot_sha256: str | None
    planner: str | None
    model_provider: str | None
    model_name: str | None
    model_version: str | None
    prompt_version: str | None
    policy_version: str | None
    confidence: float | None
    steps: Any
    verdicts: Any
    approver_id: str | None
    approver_role: str | None
    reason: str | None
    result: Any
    explanation: Any
    attributes: Any
    prev_hash: str
    record_hash: str

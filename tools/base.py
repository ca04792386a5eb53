"""What a tool is: typed arguments, a typed result, a read/write flag and a description for the model.

Each tool lives in its own file and is declared with ``@tool``. Its docstring is the description the
model sees. Expected failures (unknown ids, impossible requests, illegal transitions) come back as a
``ToolError`` result the planner can act on; only programming errors raise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlmodel import Session

from tools.db import lock_world_writes
from tools.state_machine import DomainError

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class ToolArgs(BaseModel):
    """Base of every tool's arguments: unknown fields are refused, so a model cannot smuggle any in."""

    model_config = ConfigDict(extra="forbid")


class ToolError(BaseModel):
    ok: Literal[False] = False
    error: str  # machine-readable code: not_found, invalid_arguments, illegal_transition, ...
    message: str
    details: dict[str, Any] = {}


@dataclass
class ToolContext:
    """What a tool may use: the database session, the world's time, who acts and for which incident."""

    session: Session
    now: datetime
    actor: str = "agent"
    incident_id: str | None = None
    idempotency_key: str | None = None  # set by the executor for write tools
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tool(Generic[A, R]):
    name: str
    description: str
    args_model: type[A]
    result_model: type[R]
    writes: bool
    fn: Callable[[ToolContext, A], R | ToolError]
    family: str = ""

    def openai_schema(self) -> dict[str, Any]:
        """The tool as an OpenAI function tool (chat.completions ``tools=[...]`` entry)."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def validate_args(self, raw: dict[str, Any]) -> A:
        return self.args_model.model_validate(raw)

    def invoke(self, ctx: ToolContext, raw_args: dict[str, Any] | BaseModel) -> dict[str, Any]:
        """Validate, run, and always return a JSON-able dict (a result or a ToolError)."""
        try:
            args = raw_args if isinstance(raw_args, BaseModel) else self.validate_args(raw_args)
        except ValidationError as exc:
            return ToolError(
                error="invalid_arguments",
                message=f"{self.name}: arguments do not match the schema",
                details={"errors": exc.errors(include_url=False, include_context=False)},
            ).model_dump(mode="json")
        try:
            if self.writes:
                # a write either completes or changes nothing, and runs alone (lock_world_writes)
                with ctx.session.begin_nested():
                    lock_world_writes(ctx.session)
                    result = self.fn(ctx, args)  # type: ignore[arg-type]
                    if isinstance(result, ToolError):
                        raise _Rollback(result)
            else:
                result = self.fn(ctx, args)  # type: ignore[arg-type]
        except _Rollback as rb:
            result = rb.result
        except DomainError as exc:
            result = ToolError(error=exc.code, message=exc.message, details=_jsonable(exc.details))
        out = result.model_dump(mode="json")
        out.setdefault("ok", True)
        return out


class _Rollback(Exception):
    def __init__(self, result: ToolError) -> None:
        self.result = result


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, str | int | float | bool | list | dict | None) else str(v)) for k, v in d.items()}


def tool(
    *, args: type[A], result: type[R], writes: bool, family: str = ""
) -> Callable[[Callable[[ToolContext, A], R | ToolError]], Tool[A, R]]:
    """Declare a tool; the function name is the tool name and its docstring the description."""

    def wrap(fn: Callable[[ToolContext, A], R | ToolError]) -> Tool[A, R]:
        doc = " ".join((fn.__doc__ or "").split())
        if not doc:
            raise TypeError(f"tool {fn.__name__} needs a docstring: it is the description the model sees")
        return Tool(
            name=fn.__name__,
            description=doc,
            args_model=args,
            result_model=result,
            writes=writes,
            fn=fn,
            family=family,
        )

    return wrap

"""The LLM planner: any OpenAI-compatible endpoint, investigation by READ-tool calls, a JSON plan.

Bounded on every axis: a client timeout and retry count, at most ``llm_max_steps`` model turns, at
most ``llm_max_tokens`` tokens in total. The plan must parse and validate: every tool must exist and
every step's arguments must match the tool's schema. Any failure (network, HTTP error, timeout,
budget, a write tool called during investigation, an unknown tool, malformed JSON) falls back to the
playbook planner, and ``plan.fallback_reason`` says why (the graph writes a "fallback" audit record).
Whatever it proposes, guardrails assess it like any other plan.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.plan import ExpectedEffect, Plan, PlanStep
from agent.planners.base import IncidentBrief, PlanContext, Planner, plan_confidence
from agent.prompts import PROMPT_VERSION, SYSTEM, assistant_tool_calls, incident_message, untrusted_fields
from agent.settings import Settings

log = structlog.get_logger(__name__)


class PlannerFailure(Exception):
    """Why the LLM's answer cannot be used (becomes plan.fallback_reason)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


class _LlmStep(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tool: str
    args: dict[str, Any] = {}
    rationale: str = ""
    confidence: float = Field(ge=0.0, le=1.0)
    expected_effect: ExpectedEffect = ExpectedEffect()
    continue_on_failure: bool = True


class _LlmPlan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    summary: str = ""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    steps: list[_LlmStep]


class LlmPlanner:
    name = "llm"

    def __init__(self, *, settings: Settings, fallback: Planner | None = None, client: Any = None) -> None:
        self.settings = settings
        if fallback is None:
            from agent.planners.playbook import PlaybookPlanner

            fallback = PlaybookPlanner()
        self.fallback = fallback
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                base_url=self.settings.llm_base_url,
                api_key=self.settings.llm_api_key,
                timeout=self.settings.llm_timeout_s,
                max_retries=self.settings.llm_max_retries,
            )
        return self._client

    def plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext) -> Plan:
        usage = {"input_tokens": 0, "output_tokens": 0}
        try:
            plan = self._plan(incident, snapshot, ctx, usage)
        except Exception as exc:  # every failure has the same safe answer: the playbook
            reason = str(exc) if isinstance(exc, PlannerFailure) else f"{_classify(exc)}: {exc}"
            log.warning("llm_planner_fallback", incident_id=incident.id, reason=reason[:400])
            fb = self.fallback.plan(incident, snapshot, ctx)
            return fb.model_copy(
                update={
                    "fallback_reason": reason[:400],
                    "fallback_of": self.settings.llm_model,
                    "usage": usage,
                    "prompt_version": PROMPT_VERSION,
                }
            )
        return plan

    def _plan(self, incident: IncidentBrief, snapshot: dict[str, Any], ctx: PlanContext, usage: dict[str, int]) -> Plan:
        from tools.registry import all_tools, openai_tools, read_tools

        reads = read_tools()
        registry = all_tools()
        writes = [n for n in registry if n not in reads]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": incident_message(
                    # event payloads carry customer text: it reaches the model only delimited, in
                    # customer_texts, never inside the incident's JSON (joined events' neither)
                    incident=incident.model_dump(
                        mode="json", exclude={"payloads": True, "also": {"__all__": {"payloads"}}}
                    ),
                    snapshot_summary=_summarise(snapshot),
                    customer_texts=dict(snapshot.get("customer_texts", {})),
                    write_tools=openai_tools(writes),
                    max_steps=self.settings.llm_max_steps,
                ),
            },
        ]
        tools_param = openai_tools(reads)
        for _turn in range(self.settings.llm_max_steps):
            left = self.settings.llm_max_tokens - usage["input_tokens"] - usage["output_tokens"]
            if left <= 0:
                raise PlannerFailure("token_budget", f"{sum(usage.values())} >= {self.settings.llm_max_tokens}")
            resp = self.client.chat.completions.create(
                model=self.settings.llm_model,
                messages=messages,
                tools=tools_param,
                temperature=0,
                max_tokens=left,  # the answer cannot spend past the budget before it is counted
            )
            if resp.usage is not None:  # an endpoint's negative counts do not buy budget back
                usage["input_tokens"] += max(0, int(resp.usage.prompt_tokens or 0))
                usage["output_tokens"] += max(0, int(resp.usage.completion_tokens or 0))
            if usage["input_tokens"] + usage["output_tokens"] > self.settings.llm_max_tokens:
                raise PlannerFailure("token_budget", f"{sum(usage.values())} > {self.settings.llm_max_tokens}")
            if not resp.choices:
                raise PlannerFailure("empty_response")
            msg = resp.choices[0].message
            calls = list(msg.tool_calls or [])
            if calls:
                messages.append(assistant_tool_calls(msg.content, calls))
                for c in calls:
                    if c.function.name not in reads:
                        raise PlannerFailure(
                            "forbidden_tool_call", f"{c.function.name!r} is not a read tool available here"
                        )
                    try:
                        args = json.loads(c.function.arguments or "{}")
                    except json.JSONDecodeError as exc:
                        raise PlannerFailure("malformed_tool_arguments", str(exc)) from exc
                    out = ctx.read_tool(c.function.name, args if isinstance(args, dict) else {})
                    shown = json.dumps(untrusted_fields(out), default=str)[:8000]
                    messages.append({"role": "tool", "tool_call_id": c.id, "content": shown})
                continue
            return self._validated(incident, msg.content or "", ctx, usage, registry)
        raise PlannerFailure("step_budget", f"no plan after {self.settings.llm_max_steps} model turns")

    def _validated(
        self,
        incident: IncidentBrief,
        content: str,
        ctx: PlanContext,
        usage: dict[str, int],
        registry: dict[str, Any],
    ) -> Plan:
        text = _strip_fence(content)
        try:
            raw = _LlmPlan.model_validate_json(text)
        except ValidationError as exc:
            raise PlannerFailure("invalid_plan", exc.errors(include_url=False)[0]["msg"]) from exc
        if len(raw.steps) > self.settings.llm_max_steps * 10:
            raise PlannerFailure("too_many_steps", str(len(raw.steps)))
        steps: list[PlanStep] = []
        for i, st in enumerate(raw.steps):
            tool = registry.get(st.tool)
            if tool is None:
                raise PlannerFailure("unknown_tool", f"step {i} names {st.tool!r}")
            try:
                tool.validate_args(st.args)
            except ValidationError as exc:
                raise PlannerFailure("invalid_arguments", f"step {i} ({st.tool}): {exc.errors()[0]['msg']}") from exc
            steps.append(
                PlanStep(
                    index=i,
                    tool=st.tool,
                    args=st.args,
                    rationale=st.rationale[:1000],
                    expected_effect=st.expected_effect,
                    confidence=st.confidence,
                    continue_on_failure=st.continue_on_failure,
                )
            )
        writes = {n: t.writes for n, t in registry.items()}
        confidence = plan_confidence(steps, writes)  # min of step confidences, as every planner
        if raw.confidence is not None:
            confidence = min(confidence, raw.confidence)
        try:  # stored and hashed as JSON (agent.reads.plan_digest): what cannot be is not a plan
            orjson.dumps([st.model_dump(mode="json") for st in steps], option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise PlannerFailure("unserialisable_plan", str(exc)) from exc
        return Plan(
            incident_id=incident.id,
            planner=self.name,
            steps=steps,
            confidence=confidence,
            summary=raw.summary[:2000],
            model_provider="openai_compatible",
            model_name=self.settings.llm_model,
            model_version="",
            prompt_version=PROMPT_VERSION,
            usage=dict(usage),
        )


def _strip_fence(text: str) -> str:
    m = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    return (m.group(1) if m else text).strip()


def _classify(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error"
    return type(exc).__name__


def _summarise(snapshot: dict[str, Any], max_items: int = 40) -> dict[str, Any]:
    """A compact view for the prompt: counts plus the first items of each list (the full snapshot is
    in the audit store; the model can read more through the read tools)."""
    out: dict[str, Any] = {}
    for key, value in snapshot.items():
        if key in ("customer_texts", "calls"):
            continue
        if isinstance(value, list):
            out[key] = {"count": len(value), "items": value[:max_items]}
        elif isinstance(value, dict) and len(value) > max_items:
            out[key] = {"count": len(value), "items": dict(list(value.items())[:max_items])}
        else:
            out[key] = value
    return out

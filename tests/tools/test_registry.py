"""The registry: every tool module loads, schemas are valid OpenAI function schemas, read/write flags
are as agreed, and read tools change nothing in the database."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from tests.tools.factories import NOW, build_small_world
from tools.base import Tool, ToolContext
from tools.registry import TOOL_MODULES, all_tools, get_tool, openai_tools, read_tools, write_tools

WRITES = {
    "notify_customer",
    "hold_order",
    "expedite_order",
    "cancel_order",
    "escalate_incident",
    "reserve_stock",
    "release_stock",
    "substitute_item",
    "transfer_stock",
    "apply_reassignment",
    "issue_compensation",
}
VERB_NOUN = re.compile(r"^[a-z]+(_[a-z]+)+$")

# arguments that make sense on the small world; tools not listed get arguments derived from their schema
READ_ARGS: dict[str, dict[str, Any]] = {
    "get_order": {"order_id": "O2"},
    "list_orders_at_risk": {"horizon_minutes": 120},
    "get_stock": {"store_id": "D1"},
    "find_substitutes": {"store_id": "D1", "sku_id": "milk-1l"},
    "find_nearby_stock": {"store_id": "D1", "sku_id": "bread"},
    "get_customer_value": {"customer_id": "C1"},
    "quote_compensation": {"order_ids": ["O2", "O7"]},
    "find_available_riders": {"zone": "north"},
    "plan_reassignment": {"order_ids": ["O1", "O7"]},
}
SAMPLE_BY_FIELD: dict[str, Any] = {
    "order_id": "O1",
    "order_ids": ["O1", "O2"],
    "rider_id": "RA",
    "rider_ids": ["RA"],
    "customer_id": "C1",
    "customer_ids": ["C1"],
    "store_id": "D1",
    "sku_id": "milk-1l",
    "zone": "north",
}


@pytest.mark.parametrize("path", TOOL_MODULES)
def test_every_module_defines_its_tool(path: str) -> None:
    module = importlib.import_module(path)
    name = path.rsplit(".", 1)[1]
    obj = getattr(module, name, None)
    assert isinstance(obj, Tool), f"{path} must define a Tool named {name}"
    assert obj.name == name
    assert obj.family == path.split(".")[1], f"{name}: family should be its package"


def test_registry_lists_every_tool_once() -> None:
    tools = all_tools()
    assert sorted(tools) == sorted(p.rsplit(".", 1)[1] for p in TOOL_MODULES)
    assert get_tool("get_order") is tools["get_order"] and get_tool("nope") is None
    assert set(write_tools()) == WRITES
    assert set(read_tools()) == set(tools) - WRITES
    assert len(openai_tools()) == len(tools)
    assert {t["function"]["name"] for t in openai_tools(["get_stock", "cancel_order"])} == {"get_stock", "cancel_order"}


@pytest.mark.parametrize("name", sorted(p.rsplit(".", 1)[1] for p in TOOL_MODULES))
def test_openai_schema_is_a_valid_function(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    spec = all_tools()[name].openai_schema()
    assert spec["type"] == "function"
    fn = spec["function"]
    assert fn["name"] == name and VERB_NOUN.match(name), name
    assert isinstance(fn["description"], str) and len(fn["description"]) >= 40
    params = fn["parameters"]
    assert params["type"] == "object"
    assert isinstance(params["properties"], dict) and params["properties"], "a tool takes named arguments"
    assert params.get("additionalProperties") is False, "unknown arguments must be refused"
    assert set(params.get("required", [])) <= set(params["properties"])
    jsonschema.Draft202012Validator.check_schema(params)
    for prop, sub in params["properties"].items():
        assert re.match(r"^[a-z][a-z0-9_]*$", prop), f"{name}.{prop}"
        assert sub, f"{name}.{prop} has an empty schema"


def _snapshot(session: Session) -> dict[str, list[tuple]]:
    out = {}
    for table in SQLModel.metadata.sorted_tables:
        rows = session.execute(sa_select(table)).all()
        out[table.name] = sorted(tuple(map(repr, r)) for r in rows)
    return out


def _args_for(tool: Tool[Any, Any]) -> dict[str, Any]:
    if tool.name in READ_ARGS:
        return READ_ARGS[tool.name]
    schema = tool.args_model.model_json_schema()
    return {f: SAMPLE_BY_FIELD[f] for f in schema.get("required", []) if f in SAMPLE_BY_FIELD}


def test_read_tools_change_nothing(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        before = _snapshot(s)
        ok = []
        for name in read_tools():
            tool = all_tools()[name]
            out = tool.invoke(ToolContext(session=s, now=NOW, incident_id="INC-R"), _args_for(tool))
            assert isinstance(out, dict) and "ok" in out, name
            assert not (s.new or s.dirty or s.deleted), f"{name} left changes in the session"
            s.flush()
            assert _snapshot(s) == before, f"read tool {name} changed the database"
            if out["ok"]:
                ok.append(name)
            else:
                print(f"{name}: {out['error']}: {out['message']}")
        # our own read tools must actually have run on this world, not failed early
        assert {"get_order", "list_orders_at_risk", "get_stock", "find_substitutes", "find_nearby_stock"} <= set(ok)

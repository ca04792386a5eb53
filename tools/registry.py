"""Every tool the planners may call, by name, with its read/write flag and OpenAI schema."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

from tools.base import Tool

# module path -> the Tool object it defines (attribute named like the module)
TOOL_MODULES: tuple[str, ...] = (
    # orders
    "tools.orders.get_order",
    "tools.orders.list_orders_at_risk",
    "tools.orders.notify_customer",
    "tools.orders.hold_order",
    "tools.orders.expedite_order",
    "tools.orders.cancel_order",
    "tools.orders.escalate_incident",
    # riders
    "tools.riders.find_available_riders",
    "tools.riders.plan_reassignment",
    "tools.riders.apply_reassignment",
    # inventory
    "tools.inventory.get_stock",
    "tools.inventory.reserve_stock",
    "tools.inventory.release_stock",
    "tools.inventory.find_substitutes",
    "tools.inventory.find_nearby_stock",
    "tools.inventory.substitute_item",
    "tools.inventory.transfer_stock",
    # customers
    "tools.customers.get_customer_value",
    # compensation
    "tools.compensation.quote_compensation",
    "tools.compensation.issue_compensation",
)


@lru_cache
def all_tools() -> dict[str, Tool[Any, Any]]:
    tools: dict[str, Tool[Any, Any]] = {}
    for path in TOOL_MODULES:
        module = importlib.import_module(path)
        obj = getattr(module, path.rsplit(".", 1)[1])
        if not isinstance(obj, Tool):
            raise TypeError(f"{path} does not define a Tool named {path.rsplit('.', 1)[1]}")
        tools[obj.name] = obj
    return tools


def get_tool(name: str) -> Tool[Any, Any] | None:
    return all_tools().get(name)


def read_tools() -> list[str]:
    return [n for n, t in all_tools().items() if not t.writes]


def write_tools() -> list[str]:
    return [n for n, t in all_tools().items() if t.writes]


def openai_tools(names: list[str] | None = None) -> list[dict[str, Any]]:
    return [t.openai_schema() for n, t in all_tools().items() if names is None or n in names]

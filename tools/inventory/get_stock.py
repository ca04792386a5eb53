"""Tool: stock levels of a store."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import list_stock
from tools.models import Sku
from tools.orders.service import require_ids
from tools.service import get_store


class GetStockArgs(ToolArgs):
    store_id: str = Field(min_length=1, max_length=64)
    sku_ids: list[str] | None = Field(
        default=None, max_length=200, description="only these SKUs; default every SKU the store stocks"
    )


class StockLevel(BaseModel):
    sku_id: str
    name: str
    category: str
    price_cents: int
    on_hand: int
    reserved: int = Field(description="promised to paid orders not yet picked up")
    available: int = Field(description="on_hand - reserved: what can still be promised")


class StockLevels(BaseModel):
    store_id: str
    items: list[StockLevel]


@tool(args=GetStockArgs, result=StockLevels, writes=False, family="inventory")
def get_stock(ctx: ToolContext, args: GetStockArgs) -> StockLevels | ToolError:
    """Show a store's stock: for each SKU (all, or the ones asked for) the units on hand, reserved by
    paid orders, and available. A known SKU the store does not carry shows zeros."""
    s = ctx.session
    store = get_store(session=s, store_id=args.store_id)
    wanted = sorted(set(args.sku_ids)) if args.sku_ids is not None else None
    if wanted:
        require_ids(session=s, model=Sku, ids=wanted, what="SKUs")
    rows = {stock.sku_id: (stock, sku) for stock, sku in list_stock(session=s, store_id=store.id, sku_ids=wanted)}
    items = [
        StockLevel(
            sku_id=sku.id,
            name=sku.name,
            category=sku.category,
            price_cents=sku.price_cents,
            on_hand=stock.on_hand,
            reserved=stock.reserved,
            available=stock.on_hand - stock.reserved,
        )
        for stock, sku in rows.values()
    ]
    for sku_id in wanted or []:
        if sku_id not in rows:
            sku = s.get(Sku, sku_id)
            assert sku is not None
            items.append(
                StockLevel(
                    sku_id=sku.id,
                    name=sku.name,
                    category=sku.category,
                    price_cents=sku.price_cents,
                    on_hand=0,
                    reserved=0,
                    available=0,
                )
            )
    items.sort(key=lambda i: i.sku_id)
    return StockLevels(store_id=store.id, items=items)

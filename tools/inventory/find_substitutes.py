"""Tool: in-stock alternatives to a SKU at a store: same category, similar price."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlmodel import col, select

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import get_sku
from tools.models import Sku, Stock
from tools.service import get_store


class FindSubstitutesArgs(ToolArgs):
    store_id: str = Field(min_length=1, max_length=64)
    sku_id: str = Field(min_length=1, max_length=64, description="the SKU to replace")
    quantity: int = Field(default=1, ge=1, le=100, description="units needed")
    price_band_pct: int = Field(default=20, ge=0, le=100, description="allowed price difference, percent")
    limit: int = Field(default=5, ge=1, le=50)


class Substitute(BaseModel):
    sku_id: str
    name: str
    category: str
    price_cents: int
    price_difference_cents: int = Field(description="substitute minus original unit price")
    available: int


class Substitutes(BaseModel):
    store_id: str
    sku_id: str
    original_price_cents: int
    substitutes: list[Substitute] = Field(description="closest price first")


@tool(args=FindSubstitutesArgs, result=Substitutes, writes=False, family="inventory")
def find_substitutes(ctx: ToolContext, args: FindSubstitutesArgs) -> Substitutes | ToolError:
    """Find SKUs that can replace one at a store: same category, unit price within the price band
    (default ±20%) of the original, with enough units available there, closest price first."""
    s = ctx.session
    store = get_store(session=s, store_id=args.store_id)
    original = get_sku(session=s, sku_id=args.sku_id)
    band = original.price_cents * args.price_band_pct / 100
    rows = s.exec(
        select(Sku, Stock)
        .join(Stock, col(Stock.sku_id) == col(Sku.id))
        .where(
            col(Stock.store_id) == store.id,
            col(Sku.category) == original.category,
            col(Sku.id) != original.id,
            col(Stock.on_hand) - col(Stock.reserved) >= args.quantity,
            col(Sku.price_cents) >= original.price_cents - band,
            col(Sku.price_cents) <= original.price_cents + band,
        )
    ).all()
    ranked = sorted(rows, key=lambda r: (abs(r[0].price_cents - original.price_cents), r[0].price_cents, r[0].id))
    return Substitutes(
        store_id=store.id,
        sku_id=original.id,
        original_price_cents=original.price_cents,
        substitutes=[
            Substitute(
                sku_id=sku.id,
                name=sku.name,
                category=sku.category,
                price_cents=sku.price_cents,
                price_difference_cents=sku.price_cents - original.price_cents,
                available=stock.on_hand - stock.reserved,
            )
            for sku, stock in ranked[: args.limit]
        ],
    )

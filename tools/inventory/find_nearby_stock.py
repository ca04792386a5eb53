"""Tool: other stores that have a SKU available, nearest first, with a transfer time."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlmodel import col, select

from tools.base import ToolArgs, ToolContext, ToolError, tool
from tools.inventory.service import get_sku, transfer_leg
from tools.models import Stock, Store, aware
from tools.service import get_store


class FindNearbyStockArgs(ToolArgs):
    store_id: str = Field(min_length=1, max_length=64, description="the store that needs the units")
    sku_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1, le=100)
    max_distance_m: float = Field(default=10_000, gt=0, le=100_000)
    limit: int = Field(default=5, ge=1, le=50)


class NearbyStock(BaseModel):
    store_id: str
    name: str
    kind: str
    available: int
    distance_m: float
    transfer_minutes: int = Field(description="travel by the travel rule (weather now) plus loading at both ends")
    arrival_at: datetime


class NearbyStockList(BaseModel):
    store_id: str
    sku_id: str
    stores: list[NearbyStock] = Field(description="nearest first")


@tool(args=FindNearbyStockArgs, result=NearbyStockList, writes=False, family="inventory")
def find_nearby_stock(ctx: ToolContext, args: FindNearbyStockArgs) -> NearbyStockList | ToolError:
    """Find other stores within a distance that have at least the given quantity of a SKU available,
    nearest first, each with the distance and how long a transfer to the asking store would take."""
    s = ctx.session
    here = get_store(session=s, store_id=args.store_id)
    get_sku(session=s, sku_id=args.sku_id)
    rows = s.exec(
        select(Store, Stock)
        .join(Stock, col(Stock.store_id) == col(Store.id))
        .where(
            col(Stock.sku_id) == args.sku_id,
            col(Store.id) != here.id,
            col(Stock.on_hand) - col(Stock.reserved) >= args.quantity,
        )
    ).all()
    found: list[NearbyStock] = []
    now = aware(ctx.now)
    for store, stock in rows:
        leg = transfer_leg(session=s, source=store, destination=here, now=now)
        if leg.distance_m > args.max_distance_m:
            continue
        found.append(
            NearbyStock(
                store_id=store.id,
                name=store.name,
                kind=str(store.kind),
                available=stock.on_hand - stock.reserved,
                distance_m=round(leg.distance_m, 1),
                transfer_minutes=leg.minutes,
                arrival_at=now + timedelta(minutes=leg.minutes),
            )
        )
    found.sort(key=lambda n: (n.distance_m, n.store_id))
    return NearbyStockList(store_id=here.id, sku_id=args.sku_id, stores=found[: args.limit])

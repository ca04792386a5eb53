"""Reading a Grubhub MDRP instance folder, and loading it into the database as the world.

``read_instance`` parses and validates the four tab-separated files (orders, couriers, restaurants,
instance_parameters) into an in-memory ``MdrpInstance`` (the simulator runs on it without a database).
Any defect raises ``MdrpFormatError`` naming the file, the line and the problem. ``load_mdrp`` reads
first, then replaces the world in the caller's transaction: a bad file leaves the old world untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from tools import models as m
from tools.service import clear_world
from tools.state_machine import OrderStatus

# Minute 0 of every MDRP day in the world's calendar (the instances carry no date).
MDRP_EPOCH = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

ORDERS_HEADER = ("order", "x", "y", "placement_time", "restaurant", "ready_time")
COURIERS_HEADER = ("courier", "x", "y", "on_time", "off_time")
RESTAURANTS_HEADER = ("restaurant", "x", "y")
PARAMETERS_HEADER = (
    "meters_per_minute",
    "pickup service minutes",
    "dropoff service minutes",
    "target click-to-door",
    "maximum click-to-door",
    "pay per order",
    "guaranteed pay per hour",
)
REQUIRED_FILES = ("orders.txt", "couriers.txt", "restaurants.txt", "instance_parameters.txt")


class MdrpFormatError(ValueError):
    """A defect in an instance folder; the message names the file, the line and the problem."""

    def __init__(self, problem: str, *, file: str | Path | None = None, line: int | None = None) -> None:
        where = ""
        if file is not None:
            where = str(file) + (f", line {line}" if line is not None else "")
            where += ": "
        super().__init__(where + problem)
        self.file = str(file) if file is not None else None
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class MdrpOrder:
    id: str
    x: float
    y: float
    placement: float
    restaurant: str
    ready: float


@dataclass(frozen=True, slots=True)
class MdrpCourier:
    id: str
    x: float
    y: float
    on_time: float
    off_time: float


@dataclass(frozen=True, slots=True)
class MdrpRestaurant:
    id: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class MdrpParams:
    meters_per_minute: float
    pickup_service: float
    dropoff_service: float
    target: float
    maximum: float
    pay_per_order: float  # dollars
    pay_per_hour: float  # dollars


@dataclass(frozen=True)
class MdrpInstance:
    name: str
    path: Path
    orders: tuple[MdrpOrder, ...]
    couriers: tuple[MdrpCourier, ...]
    restaurants: tuple[MdrpRestaurant, ...]
    params: MdrpParams

    def restaurant_map(self) -> dict[str, MdrpRestaurant]:
        return {r.id: r for r in self.restaurants}


def _rows(path: Path, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every data line, after checking the header and the field count."""
    if not path.is_file():
        raise MdrpFormatError("file is missing", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MdrpFormatError(f"not UTF-8 text ({exc.reason})", file=path) from exc
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise MdrpFormatError("empty file (no header line)", file=path, line=1)
    got = tuple(f.strip() for f in lines[0].split("\t"))
    if got != header:
        raise MdrpFormatError(f"wrong header {list(got)}, expected {list(header)}", file=path, line=1)
    out = []
    for no, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        fields = [f.strip() for f in raw.split("\t")]
        if len(fields) != len(header):
            raise MdrpFormatError(
                f"malformed or truncated line: {len(fields)} fields, expected {len(header)} ({raw!r})",
                file=path,
                line=no,
            )
        if any(f == "" for f in fields):
            raise MdrpFormatError(f"empty field in {raw!r}", file=path, line=no)
        out.append((no, fields))
    return out


def _num(value: str, column: str, path: Path, line: int) -> float:
    try:
        v = float(value)
    except ValueError:
        raise MdrpFormatError(f"column {column!r}: {value!r} is not a number", file=path, line=line) from None
    if not math.isfinite(v):
        raise MdrpFormatError(f"column {column!r}: {value!r} is not finite", file=path, line=line)
    return v


def _unique(ids: dict[str, int], key: str, path: Path, line: int) -> None:
    if key in ids:
        raise MdrpFormatError(f"duplicate id {key!r} (first on line {ids[key]})", file=path, line=line)
    ids[key] = line


def read_instance(path: str | Path) -> MdrpInstance:
    """Parse and validate one instance folder; raise MdrpFormatError on any defect."""
    folder = Path(path)
    if not folder.is_dir():
        raise MdrpFormatError("instance folder not found", file=folder)
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise MdrpFormatError("file is missing", file=folder / name)

    p_path = folder / "instance_parameters.txt"
    p_rows = _rows(p_path, PARAMETERS_HEADER)
    if len(p_rows) != 1:
        raise MdrpFormatError(f"expected exactly one parameter line, found {len(p_rows)}", file=p_path)
    line, f = p_rows[0]
    vals = [_num(v, c, p_path, line) for v, c in zip(f, PARAMETERS_HEADER, strict=True)]
    if vals[0] <= 0:
        raise MdrpFormatError("meters_per_minute must be positive", file=p_path, line=line)
    params = MdrpParams(*vals)

    r_path = folder / "restaurants.txt"
    seen: dict[str, int] = {}
    restaurants = []
    for line, f in _rows(r_path, RESTAURANTS_HEADER):
        _unique(seen, f[0], r_path, line)
        restaurants.append(MdrpRestaurant(f[0], _num(f[1], "x", r_path, line), _num(f[2], "y", r_path, line)))

    c_path = folder / "couriers.txt"
    seen = {}
    couriers = []
    for line, f in _rows(c_path, COURIERS_HEADER):
        _unique(seen, f[0], c_path, line)
        x, y, on, off = (_num(v, c, c_path, line) for v, c in zip(f[1:], COURIERS_HEADER[1:], strict=True))
        if off < on:
            raise MdrpFormatError(f"off_time {off:g} is before on_time {on:g}", file=c_path, line=line)
        couriers.append(MdrpCourier(f[0], x, y, on, off))

    o_path = folder / "orders.txt"
    seen = {}
    rest_ids = {r.id for r in restaurants}
    orders = []
    for line, f in _rows(o_path, ORDERS_HEADER):
        _unique(seen, f[0], o_path, line)
        x = _num(f[1], "x", o_path, line)
        y = _num(f[2], "y", o_path, line)
        placed = _num(f[3], "placement_time", o_path, line)
        ready = _num(f[5], "ready_time", o_path, line)
        if f[4] not in rest_ids:
            raise MdrpFormatError(f"unknown restaurant {f[4]!r}", file=o_path, line=line)
        if ready < placed:
            raise MdrpFormatError(f"ready_time {ready:g} before placement {placed:g}", file=o_path, line=line)
        orders.append(MdrpOrder(f[0], x, y, placed, f[4], ready))
    if not orders:
        raise MdrpFormatError("no orders", file=o_path)
    if not couriers:
        raise MdrpFormatError("no couriers", file=c_path)
    return MdrpInstance(
        name=folder.name,
        path=folder,
        orders=tuple(orders),
        couriers=tuple(couriers),
        restaurants=tuple(restaurants),
        params=params,
    )


def _bulk(session: Session, model: type, rows: list[dict]) -> None:
    """Core executemany (no ORM objects): a full-size day loads in about a second."""
    if rows:
        session.connection().execute(model.__table__.insert(), rows)  # type: ignore[attr-defined]


def load_mdrp(*, session: Session, path: str | Path, seed: int = 7) -> dict[str, int]:
    """Replace the world with one MDRP day plus the seeded overlay (see tools.world.overlay).

    Everything is validated before the first write; the caller's transaction commits the whole world
    or nothing. Returns the rows written per entity.
    """
    from tools.world.overlay import build_overlay

    inst = read_instance(path)
    p = inst.params
    overlay = build_overlay(inst, seed=seed, epoch=MDRP_EPOCH)
    epoch = MDRP_EPOCH
    clear_world(session=session)

    def at(minute: float) -> datetime:
        return epoch + timedelta(minutes=minute)

    world = {
        "id": 1,
        "name": inst.name,
        "source": f"mdrp:{inst.name}",
        "seed": seed,
        "epoch": epoch,
        "now": epoch,
        "meters_per_minute": p.meters_per_minute,
        "pickup_service_minutes": int(p.pickup_service),
        "dropoff_service_minutes": int(p.dropoff_service),
        "target_minutes": int(p.target),
        "max_minutes": int(p.maximum),
        "pay_per_order_cents": round(p.pay_per_order * 100),
        "pay_per_hour_cents": round(p.pay_per_hour * 100),
        "currency": "USD",
        "params": {"instance": inst.name, "overlay": overlay.describe()},
    }
    _bulk(session, m.WorldInfo, [world])
    zone = inst.name
    _bulk(
        session,
        m.Store,
        [
            {"id": r.id, "name": f"Restaurant {r.id}", "kind": "restaurant", "x": r.x, "y": r.y, "zone": zone}
            for r in inst.restaurants
        ],
    )
    _bulk(session, m.Customer, overlay.customers)
    _bulk(session, m.Purchase, overlay.purchases)
    _bulk(session, m.Sku, overlay.skus)
    _bulk(
        session,
        m.Rider,
        [
            {
                "id": c.id,
                "name": f"Courier {c.id}",
                "x": c.x,
                "y": c.y,
                "status": "idle" if c.on_time <= 0 < c.off_time else "off_shift",
                "vehicle": overlay.vehicles[i],
                "capacity": overlay.capacities[i],
                "zone": zone,
                "shift_start": at(c.on_time),
                "shift_end": at(c.off_time),
                "free_at": None,
            }
            for i, c in enumerate(inst.couriers)
        ],
    )
    _bulk(
        session,
        m.Order,
        [
            {
                "id": o.id,
                "customer_id": overlay.order_customer[i],
                "store_id": o.restaurant,
                "x": o.x,
                "y": o.y,
                "zone": zone,
                "status": OrderStatus.placed.value,
                "value_cents": overlay.order_value[i],
                "currency": "USD",
                "channel": overlay.order_channel[i],
                "note": "",
                "placed_at": at(o.placement),
                "ready_at": at(o.ready),
                "promised_at": at(o.placement + p.target),
                "rider_id": None,
                "assigned_at": None,
                "picked_up_at": None,
                "delivered_at": None,
                "closed_at": None,
                "priority": 0,
                "on_hold": False,
                "version": 0,
            }
            for i, o in enumerate(inst.orders)
        ],
    )
    _bulk(session, m.OrderLine, overlay.order_lines)
    session.flush()
    return {
        "orders": len(inst.orders),
        "riders": len(inst.couriers),
        "stores": len(inst.restaurants),
        "customers": len(overlay.customers),
        "purchases": len(overlay.purchases),
        "skus": len(overlay.skus),
        "order_lines": len(overlay.order_lines),
    }

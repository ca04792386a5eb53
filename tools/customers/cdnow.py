"""CDNOW purchase histories: reading the files, summarising them, loading them as customers.

Two files (see the data README): ``CDNOW_master.txt`` (header; customer_id, date, number_of_cds,
dollar_value) and ``CDNOW_sample.txt`` (no header; master_id, sample_id, date, number_of_cds,
dollar_value). Customers are keyed by the MASTER id in both, so one person has the same id
("cdnow-00004") whichever file was loaded.

Loaded customers get a tier from their fitted 12-month value (BG/NBD x Gamma-Gamma fitted on the
file's own histories as of its last day; see ``tools.customers.value.tier_for_value``): the top 5% are
platinum, the next 15% gold, the next 30% silver, the rest bronze.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sqlmodel import Session, col, select

from tools.customers.rfm import Summary, summarise
from tools.models import Customer, Purchase
from tools.state_machine import Conflict

Which = Literal["sample", "master"]

EPOCH = date(1997, 1, 1)  # day 0: the cohort's first purchases are in Q1 1997
CALIBRATION_END = date(1997, 9, 30)  # end of the standard 39-week calibration period
HOLDOUT_END = date(1998, 6, 30)  # end of the 39-week holdout
FILES: dict[str, str] = {"sample": "CDNOW_sample.txt", "master": "CDNOW_master.txt"}
ID_PREFIX = "cdnow-"


class CdnowFormatError(ValueError):
    """A CDNOW file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class CdnowData:
    """The rows of one file as parallel arrays, in file order."""

    path: Path
    which: Which
    master_ids: list[str]  # per row, as written ("00004")
    keys: NDArray[np.int64]  # per row, int(master_id)
    days: NDArray[np.int64]  # per row, days since EPOCH
    quantity: NDArray[np.int64]
    cents: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_customers(self) -> int:
        return len(np.unique(self.keys))


def day_number(d: date) -> int:
    return (d - EPOCH).days


def resolve_path(path: Path, which: Which) -> Path:
    """Accept the folder (``.../cdnow``) or the file itself."""
    path = Path(path)
    return path / FILES[which] if path.is_dir() else path


def read_cdnow(path: Path, which: Which = "sample") -> CdnowData:
    """Parse a CDNOW file; raises CdnowFormatError('<file>:<line>: <problem>') on bad input."""
    if which not in FILES:
        raise ValueError(f"which must be 'sample' or 'master', not {which!r}")
    path = resolve_path(path, which)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise CdnowFormatError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise CdnowFormatError(f"{path}: not an ASCII text file ({exc.reason} at byte {exc.start})") from exc
    n_fields = 5 if which == "sample" else 4
    id_col, date_col = 0, n_fields - 3
    ids: list[str] = []
    keys: list[int] = []
    days: list[int] = []
    qty: list[int] = []
    cents: list[int] = []
    date_cache: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if lineno == 1 and not fields[0].isdigit():
            continue  # the master file's header
        if len(fields) != n_fields:
            raise CdnowFormatError(
                f"{path}:{lineno}: expected {n_fields} fields for the {which} file, got {len(fields)}: {line.strip()!r}"
            )
        raw_id, raw_date, raw_qty, raw_dollars = fields[id_col], fields[date_col], fields[-2], fields[-1]
        if not raw_id.isdigit():
            raise CdnowFormatError(f"{path}:{lineno}: customer id {raw_id!r} is not a number")
        day = date_cache.get(raw_date)
        if day is None:
            try:
                if len(raw_date) != 8:
                    raise ValueError
                day = day_number(date(int(raw_date[:4]), int(raw_date[4:6]), int(raw_date[6:])))
            except ValueError:
                raise CdnowFormatError(f"{path}:{lineno}: date {raw_date!r} is not YYYYMMDD") from None
            date_cache[raw_date] = day
        try:
            n_cds = int(raw_qty)
            dollars = float(raw_dollars)
        except ValueError:
            raise CdnowFormatError(
                f"{path}:{lineno}: number_of_cds {raw_qty!r} / dollar_value {raw_dollars!r} are not numbers"
            ) from None
        if n_cds < 0 or not np.isfinite(dollars) or dollars < 0:
            raise CdnowFormatError(f"{path}:{lineno}: negative or non-finite quantity or amount")
        ids.append(raw_id)
        keys.append(int(raw_id))
        days.append(day)
        qty.append(n_cds)
        cents.append(round(dollars * 100))
    if not keys:
        raise CdnowFormatError(f"{path}: no purchase rows")
    return CdnowData(
        path=path,
        which=which,
        master_ids=ids,
        keys=np.asarray(keys, dtype=np.int64),
        days=np.asarray(days, dtype=np.int64),
        quantity=np.asarray(qty, dtype=np.int64),
        cents=np.asarray(cents, dtype=np.int64),
    )


def cdnow_summary(
    data: CdnowData,
    *,
    calibration_end: date = CALIBRATION_END,
    holdout_end: date | None = HOLDOUT_END,
    in_dollars: bool = True,
) -> Summary:
    """Weekly (frequency, recency, T, average repeat spend, holdout count) per customer."""
    amounts = data.cents / 100.0 if in_dollars else data.cents.astype(float)
    return summarise(
        data.keys,
        data.days,
        amounts,
        calibration_end=day_number(calibration_end),
        holdout_end=None if holdout_end is None else day_number(holdout_end),
    )


def load_cdnow_customers(*, session: Session, path: Path, which: Which = "sample") -> dict[str, int]:
    """Insert the file's customers and purchases (bulk, in the caller's transaction; no commit).

    No world is needed: customers and purchases stand alone. Raises Conflict when CDNOW customers
    are already in the database, CdnowFormatError on a bad file.
    """
    from tools.customers.value import fit_population, tier_for_value

    data = read_cdnow(path, which)
    first_id = session.exec(select(Customer.id).where(col(Customer.id).startswith(ID_PREFIX)).limit(1)).first()
    if first_id is not None:
        raise Conflict(f"CDNOW customers are already loaded (e.g. {first_id!r})", customer_id=first_id)

    last_day = date.fromordinal(EPOCH.toordinal() + int(data.days.max()))
    summary = cdnow_summary(data, calibration_end=last_day, holdout_end=None, in_dollars=False)
    model = fit_population(summary, source=f"cdnow-{which}")
    values = model.values_12m_cents(summary)
    tier_by_key = {
        int(k): tier_for_value(int(v), model.tier_cuts_cents)
        for k, v in zip(summary.customer_keys, values, strict=True)
    }

    name_by_key: dict[int, str] = {}
    for raw_id, key in zip(data.master_ids, data.keys.tolist(), strict=True):
        name_by_key.setdefault(key, raw_id)
    customers = [
        {
            "id": f"{ID_PREFIX}{raw_id}",
            "name": f"CDNOW customer {raw_id}",
            "tier": tier_by_key[key].value,
            "channel": "web",
            "x": 0.0,
            "y": 0.0,
            "complaints_count": 0,
            "refund_claims_count": 0,
            "compensations_count": 0,
        }
        for key, raw_id in name_by_key.items()
    ]
    epoch = datetime(EPOCH.year, EPOCH.month, EPOCH.day, 12, tzinfo=UTC)  # noon: a day, not an instant
    when = {d: epoch + timedelta(days=d) for d in np.unique(data.days).tolist()}
    purchases = [
        {
            "customer_id": f"{ID_PREFIX}{name_by_key[k]}",
            "purchased_at": when[d],
            "amount_cents": c,
            "quantity": q,
        }
        for k, d, c, q in zip(
            data.keys.tolist(), data.days.tolist(), data.cents.tolist(), data.quantity.tolist(), strict=True
        )
    ]
    _bulk_insert(session, Customer, customers)
    _bulk_insert(session, Purchase, purchases)
    counts = {"customers": len(customers), "purchases": len(purchases)}
    for tier in ("bronze", "silver", "gold", "platinum"):
        counts[f"tier_{tier}"] = sum(1 for c in customers if c["tier"] == tier)
    return counts


def _bulk_insert(session: Session, model: type[Customer] | type[Purchase], rows: list[dict[str, Any]]) -> None:
    """Insert many rows in the session's transaction: COPY on PostgreSQL, batched executemany elsewhere.

    The ORM's unit of work would take minutes for the master file's 69,659 purchases; COPY and
    SQLite's executemany take about a second.
    """
    if not rows:
        return
    session.flush()
    conn = session.connection()
    table = model.__table__  # type: ignore[union-attr]
    if conn.dialect.name == "postgresql":
        columns = list(rows[0])
        cols_sql = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in columns)
        name = conn.dialect.identifier_preparer.quote(table.name)
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cur, cur.copy(f"COPY {name} ({cols_sql}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
    else:
        conn.execute(table.insert(), rows)

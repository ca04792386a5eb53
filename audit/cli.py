"""`orderagent audit verify|show|bench`: check the decision-record chain and read an incident's records."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlmodel import Session


def add_commands(subparsers: Any) -> None:
    from agent.cli import positive_int

    audit = subparsers.add_parser("audit", help="verify and read the hash-chained decision records")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = sub.add_parser("verify", help="verify the hash chain; exit 1 naming the first bad record")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--database-url", default=None, help="default: settings.database_url")
    verify.set_defaults(func=cmd_verify)

    show = sub.add_parser("show", help="print the decision records of one incident, or one snapshot")
    what = show.add_mutually_exclusive_group(required=True)
    what.add_argument("--incident")
    what.add_argument("--snapshot", metavar="SHA256", help="print the snapshot's content exactly as stored")
    show.add_argument("--json", action="store_true")
    show.add_argument("--database-url", default=None)
    show.set_defaults(func=cmd_show)

    bench = sub.add_parser("bench", help="time chain verification over synthetic records")
    bench.add_argument("-n", type=positive_int, default=100_000, help="records to verify")
    bench.add_argument("--repeats", type=positive_int, default=3)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)


def _session(url: str | None) -> Session:
    from tools.db import existing_engine

    return Session(existing_engine(url), expire_on_commit=False)


def cmd_verify(args: argparse.Namespace) -> int:
    from audit.chain import verify_chain

    with _session(args.database_url) as session:
        report = verify_chain(session=session)
    if args.json:
        print(report.model_dump_json())
    elif report.ok:
        print(f"ok: {report.records} records, head {report.head_hash} ({report.seconds:.3f}s)")
    elif report.first_bad_seq is None:
        print(f"BROKEN: {report.problem} ({report.records} records chain correctly)")
    else:
        print(f"BROKEN at record seq={report.first_bad_seq}: {report.problem} ({report.records} good before it)")
    return 0 if report.ok else 1


def cmd_show(args: argparse.Namespace) -> int:
    from audit.models import RecordPublic
    from audit.service import list_records

    if args.snapshot:
        return _show_snapshot(args.snapshot.lower(), args.database_url)
    with _session(args.database_url) as session:
        records = list_records(session=session, incident_id=args.incident, limit=100_000)
        views = [RecordPublic.model_validate(r, from_attributes=True) for r in records]
    if args.json:
        print(json.dumps([v.model_dump(mode="json") for v in views], indent=2))
        return 0
    if not views:
        print(f"no records for incident {args.incident}")
        return 1
    for v in views:
        who = f" by {v.approver_id} ({v.approver_role})" if v.approver_id else ""
        steps = ", ".join(str(s.get("tool")) for s in (v.steps or []) if isinstance(s, dict))
        print(
            f"#{v.seq} {v.recorded_at.isoformat()} {v.stage}{who} planner={v.planner or '-'}"
            f" policy={v.policy_version or '-'} conf={v.confidence if v.confidence is not None else '-'}"
            + (f" steps=[{steps}]" if steps else "")
            + (f" reason={v.reason!r}" if v.reason else "")
        )
    return 0


def _show_snapshot(sha256: str, url: str | None) -> int:
    """The content as stored (pipe it to sha256sum: the hash is the one the records name)."""
    import sys

    from audit.service import SnapshotIntegrityError, get_snapshot_text

    with _session(url) as session:
        try:
            body = get_snapshot_text(session=session, sha256=sha256)
        except SnapshotIntegrityError as exc:
            print(f"BROKEN: {exc}", file=sys.stderr)
            return 1
    if body is None:
        print(f"no snapshot {sha256}", file=sys.stderr)
        return 1
    sys.stdout.write(body)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from audit.bench import bench_verify

    result = bench_verify(n=args.n, repeats=args.repeats)
    print(
        json.dumps(result)
        if args.json
        else f"verified {result['records']} records: {result['records_per_s']:,} records/s (best of"
        f" {result['repeats']}; median {result['records_per_s_median']:,})"
    )
    return 0

"""CLI commands of the service: ``serve``, ``demo`` and ``token create|list|revoke``."""

from __future__ import annotations

import argparse
import sys

from agent.cli import port_number
from agent.settings import get_settings


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the HTTP service (creates no tokens)")
    serve.add_argument("--host", default=None, help="bind address (default: settings.host)")
    serve.add_argument("--port", type=port_number, default=None, help="port (default: settings.port)")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="live demo: fresh DB, a token per role, the service and a simulated city")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=port_number, default=8000)
    demo.add_argument("--every", type=float, default=4.0, help="seconds between injected exceptions")
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = never)")
    demo.add_argument(
        "--dir",
        default=None,
        help="folder of the demo's own SQLite database, wiped at start (default: var/demo; DATABASE_URL is never used)",
    )
    demo.set_defaults(func=cmd_demo)

    token = sub.add_parser("token", help="API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create a token; its secret is printed once")
    create.add_argument(
        "--role", required=True, choices=["integration", "dispatcher", "supervisor", "auditor", "admin"]
    )
    create.add_argument("--name", required=True, help="who or what uses it (recorded on every decision)")
    create.set_defaults(func=cmd_token_create)
    listed = tsub.add_parser("list", help="list tokens: id, prefix, role, name, created, revoked (never secrets)")
    listed.set_defaults(func=cmd_token_list)
    revoke = tsub.add_parser(
        "revoke", help="revoke a token by id; running services stop accepting it within ORDERAGENT_AUTH_CACHE_S"
    )
    revoke.add_argument("token_id", type=int)
    revoke.set_defaults(func=cmd_token_revoke)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from agent.api.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from agent.api.service import create_token
    from tools.db import get_engine, session_scope

    with session_scope(get_engine()) as session:
        token, secret = create_token(session=session, name=args.name, role=args.role)
        role = token.role.value
    sys.stdout.write(f"{secret}\n")
    sys.stderr.write(f"token for {args.name!r} with role {role}: shown once, store it now\n")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from agent.api.service import list_tokens
    from tools.db import existing_engine
    from tools.models import aware

    with Session(existing_engine()) as session:
        for t in list_tokens(session=session):
            state = "revoked" if t.revoked else "active"
            role = getattr(t.role, "value", t.role)
            created = aware(t.created_at).isoformat()  # UTC on both backends (SQLite hands back naive)
            sys.stdout.write(f"{t.id}\t{t.prefix}\t{role}\t{t.name}\t{created}\t{state}\n")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from agent.api.service import revoke_token
    from tools.db import existing_engine, session_scope

    with session_scope(existing_engine()) as session:
        found = revoke_token(session=session, token_id=args.token_id)
    if not found:
        sys.stderr.write(f"no token with id {args.token_id}\n")
        return 1
    settings = get_settings()
    sys.stderr.write(f"token {args.token_id} revoked; running services refuse it within {settings.auth_cache_s:g} s\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent.demo import run_demo

    return run_demo(
        host=args.host,
        port=args.port,
        every_s=args.every,
        seed=args.seed,
        duration_s=args.duration,
        directory=Path(args.dir) if args.dir else None,
    )

"""The `orderagent` command. Each package contributes its own sub-commands through ``add_commands``."""

from __future__ import annotations

import argparse
import importlib
import sys

# module -> it defines add_commands(subparsers) for the commands it owns
COMMAND_MODULES = (
    "tools.world.cli",  # world generate|load-mdrp|load-cdnow, simulate
    "tools.customers.cli",  # ltv fit|backtest
    "tools.bench",  # bench tools (the `bench` parser is shared, see below)
    "agent.incident_cli",  # incident run
    "agent.commands",  # serve, demo, token create
    "audit.cli",  # audit verify
    "evals.cli",  # eval, eval export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.add_commands(sub)
    return parser


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded_int(text, 1, None)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded_int(text, 0, None)


def port_number(text: str) -> int:
    """argparse type: a TCP port (1-65535)."""
    return _bounded_int(text, 1, 65535)


def _bounded_int(text: str, low: int, high: int | None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"{value} is above {high}")
    return value


def main(argv: list[str] | None = None) -> int:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    from tools.db import MissingDatabase

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except (ArgumentError, NoSuchModuleError) as exc:  # a database URL that is not one
        print(f"orderagent: not a usable database URL: {exc}", file=sys.stderr)
        return 2
    except MissingDatabase as exc:  # a command that reads a database pointed at none
        print(f"orderagent: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:  # a database that is not there or not reachable
        print(f"orderagent: the database cannot be used: {str(exc.orig or exc).strip()}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

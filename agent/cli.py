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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

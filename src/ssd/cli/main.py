"""The `ssd` command: one sub-command per job, each in its own module under `ssd.cli.commands`.

Each module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. A command module
imports only argparse (and `ssd.cli.arguments`) at its top and the heavy libraries inside `run`, so a
missing optional dependency of one command never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ssd.errors import UserError

COMMANDS = {
    "train": "ssd.cli.commands.train",
    "eval": "ssd.cli.commands.evaluate",
    "detect": "ssd.cli.commands.detect",
    "export": "ssd.cli.commands.export",
    "bench": "ssd.cli.commands.bench",
    "data": "ssd.cli.commands.data",
    "info": "ssd.cli.commands.info",
    "serve": "ssd.cli.commands.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssd", description="Single Shot MultiBox Detector toolkit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

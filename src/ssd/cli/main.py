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
import warnings

from ssd.errors import RunInterrupted, UserError, did_you_mean
from ssd.version import __version__

COMMANDS = {
    "train": "ssd.cli.commands.train",
    "eval": "ssd.cli.commands.evaluate",
    "detect": "ssd.cli.commands.detect",
    "export": "ssd.cli.commands.export",
    "bench": "ssd.cli.commands.bench",
    "data": "ssd.cli.commands.data",
    "info": "ssd.cli.commands.info",
    "weights": "ssd.cli.commands.weights",
    "serve": "ssd.cli.commands.serve",
}


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors add "did you mean" for a mistyped option, command or choice.

    Sub-parsers are made of the same class (argparse uses the parent's), so every command has it.
    """

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        # The words this parser is given, kept for `error`: a mistyped option is worth naming even when
        # argparse stops first on something else (a required option missing, say).
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            # argparse reports a command's unknown options from the top parser, with the top usage; the
            # command's own parser (recorded by `_record_parser`) knows which options were meant.
            parser = getattr(namespace, "_parser", None) or self
            known = _option_strings(parser)
            hints = "".join(
                did_you_mean(word.split("=", 1)[0], known) for word in extras if word.startswith("--")
            )
            parser.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return namespace

    def error(self, message: str):  # type: ignore[override]
        if not message.startswith("unrecognized arguments"):  # those carry their own hints
            message += self._unknown_option_hints()
        super().error(message)

    def _unknown_option_hints(self) -> str:
        known = _option_strings(self)
        hints = []
        for word in getattr(self, "_words", []):
            name = word.split("=", 1)[0]
            # `--batch` is an abbreviation argparse accepts; only a word no option begins with is mistyped.
            if name.startswith("--") and name != "--" and not any(k.startswith(name) for k in known):
                hints.append(f"; {name} is not an option of {self.prog}{did_you_mean(name, known)}")
        return "".join(hints)

    def _check_value(self, action, value):
        # The one place argparse refuses a value outside `choices` (a command name or an option's value).
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as error:
            hint = did_you_mean(str(value), [str(choice) for choice in action.choices or ()])
            raise argparse.ArgumentError(action, f"{error.message}{hint}") from None


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """The long options of `parser` itself (a sub-command's are suggested by its own parser)."""
    return sorted({name for action in parser._actions for name in action.option_strings if name[:2] == "--"})


def _record_parser(parser: argparse.ArgumentParser) -> None:
    """Each parser records itself in the parsed namespace (the innermost one wins): `Parser.parse_args`
    then suggests options from the command that was typed."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _record_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ssd", description="Single Shot MultiBox Detector toolkit")
    parser.add_argument("--version", action="version", version=f"ssd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        _record_parser(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def _show_our_warnings_plainly() -> None:
    """Our warnings (a dataset's problems, say) are written for the user: print them as `warning: ...`
    without Python's file, line number and source line. Other libraries' warnings keep Python's form."""
    shown_by_python = warnings.showwarning
    if getattr(shown_by_python, "plain_for_ssd", False):  # installed already (main called again)
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("ssd."):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            shown_by_python(message, category, filename, lineno, file, line)

    show.plain_for_ssd = True
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    _show_our_warnings_plainly()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except RunInterrupted as interruption:
        print(f"interrupted: {interruption.message}", file=sys.stderr)
        return interruption.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

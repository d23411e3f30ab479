"""The `vessa` command line: one subcommand per job, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys

from vessa.errors import VessaError

# Each module named here has `add_cli(subparsers)`, which adds its subcommand(s) and sets
# `func(args) -> int` on them. Heavy imports (torch, sam2) happen inside `func`, so
# `vessa --help` stays fast.
COMMAND_MODULES = (
    "vessa.samples",
    "vessa.weights",
    "vessa.bank_cli",
    "vessa.text_cli",
    "vessa.segment",
    "vessa.evaluate",
    "vessa.train.cli",
    "vessa.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="vessa", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `vessa` subcommand; bad input ends with a one-line message and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        code = int(args.func(args) or 0)
        # Exit without a final garbage-collection sweep over torch/MONAI's many objects (seconds
        # after a training job; a cancelling UI waits for the process to end).
        gc.freeze()
        return code
    except VessaError as error:
        print(f"vessa {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vessa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

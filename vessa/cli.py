"""The `vessa` command line: one subcommand per job, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import signal
import sys
import threading

from vessa import __version__
from vessa.errors import VessaError

DESCRIPTION = ("Segment structures in medical images from a few example segmentations and the structure's name, "
               "score the results, and train the model on your own cases.")
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells report it

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
    parser = argparse.ArgumentParser(prog="vessa", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"vessa {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(subparsers)
    _add_verbose(parser)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """`-v` before or after any (sub)command: given anywhere, it is set."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _add_verbose(subparser)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a job scheduler) handled like Ctrl-C: the run unwinds and its
    temporary files are removed."""


def _raise_terminated(signum: int, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one `vessa` subcommand; bad input ends with a one-line message and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        code = int(args.func(args) or 0)
        # Exit without a final garbage-collection sweep over torch/MONAI's many objects (seconds
        # after a training job; a cancelling UI waits for the process to end).
        gc.freeze()
        return code
    except VessaError as error:
        print(f"vessa {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        name = "SIGTERM" if isinstance(interrupt, _Terminated) else "SIGINT"
        print(f"vessa {args.command}: interrupted ({name})", file=sys.stderr)
        return EXIT_INTERRUPTED[name]
    finally:
        if on_main_thread:  # None: the previous handler was not set from Python
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())

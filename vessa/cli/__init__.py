"""The `vessa` command line: one module per subcommand, each with `add_cli(subparsers)`.

A module adds its subcommand(s) and sets `func(args) -> int` on them; heavy imports (torch,
sam2) happen inside `func`, so `vessa --help` stays fast. The library code a command runs lives
in the library (`vessa.segment`, `vessa.evaluate`, `vessa.weights`, `vessa.train`, ...).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading

from vessa import __version__
from vessa.cli import bank, demo, evaluate, samples, segment, text_table, train, weights
from vessa.errors import VessaError

DESCRIPTION = ("Segment structures in medical images from a few example segmentations and the structure's name, "
               "score the results, and train the model on your own cases.")
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells report it

COMMANDS = (samples, weights, bank, text_table, segment, evaluate, train, demo)  # in `vessa --help` order


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="vessa", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"vessa {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_cli(subparsers)
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


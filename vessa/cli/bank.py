"""`vessa bank`: create a template bank, add exemplar cases to it, list what it holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from vessa.io import TemplateBank, read_segmentation, read_volume


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa bank create|add|list`."""
    parser = subparsers.add_parser("bank", help="template banks of exemplar image + segmentation pairs")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create an empty bank folder")
    create.add_argument("bank", help="folder of the new bank (created if missing; must not hold a bank)")
    create.set_defaults(func=lambda args: _create(args.bank))
    add = actions.add_parser("add", help="add an image and its segmentation as one case")
    add.add_argument("bank", help="bank folder (made with `vessa bank create`)")
    add.add_argument("--image", required=True)
    add.add_argument("--segmentation", required=True, help=".seg.nrrd or label volume")
    add.add_argument("--case-id", help="default: the image file name without suffixes")
    add.add_argument("--modality", default="", help="CT, MR, ... (default: none recorded)")
    add.add_argument("--describe", action="append", default=[], metavar="NAME=TEXT",
                     help="a description used as text prompt for segment NAME")
    add.set_defaults(func=_add)
    listing = actions.add_parser("list", help="list the cases and structure names of a bank")
    listing.add_argument("bank", help="bank folder")
    listing.set_defaults(func=_list)


def _create(path: str) -> int:
    TemplateBank.create(path)
    print(f"created template bank {path}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from vessa.errors import InputError

    descriptions = {}
    for item in args.describe:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise InputError(f"--describe {item!r}: expected NAME=TEXT")
        descriptions[name.strip()] = text.strip()
    case_id = args.case_id or Path(args.image).name.split(".")[0]
    entry = TemplateBank.open(args.bank).add(read_volume(args.image), read_segmentation(args.segmentation),
                                             case_id, args.modality, descriptions)
    print(f"added case {entry.id} with {len(entry.segments)} segments: {', '.join(entry.segment_names())}")
    return 0


def _list(args: argparse.Namespace) -> int:
    bank = TemplateBank.open(args.bank)
    for entry in bank.entries:
        print(f"{entry.id:20s} {entry.modality or '-':6s} {', '.join(entry.segment_names())}")
    print(f"{len(bank.entries)} cases, {len(bank.names())} structures")
    return 0

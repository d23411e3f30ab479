"""`vessa text-table`: precompute the text embeddings of structure names for one text tower."""

from __future__ import annotations

import argparse


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa text-table`."""
    parser = subparsers.add_parser(
        "text-table", help="embed structure names once, so jobs need no text tower (VESSA_TEXT_EMBEDDINGS)")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="strings to embed")
    parser.add_argument("--segmentation", action="append", default=[], metavar="SEG",
                        help="also embed every segment name of this .seg.nrrd (repeatable)")
    parser.add_argument("--checkpoint", help="use this VESSA checkpoint's text tower (default: the default tower)")
    parser.add_argument("--out", required=True, help="table file to write")
    parser.set_defaults(func=_text_table)


def _text_table(args: argparse.Namespace) -> int:
    from vessa.errors import InputError
    from vessa.io import read_segmentation
    from vessa.model.checkpoint import read_checkpoint
    from vessa.model.config import ModelConfig, TextConfig
    from vessa.model.text import write_embedding_table

    texts = list(args.texts)
    for path in args.segmentation:
        texts += [segment.name for segment in read_segmentation(path).segments]
    if not texts:
        raise InputError("nothing to embed: give TEXT arguments or --segmentation files")
    content = read_checkpoint(args.checkpoint) if args.checkpoint else {}
    # an official SAM2.1 checkpoint has no config: it loads with the default tower
    config = ModelConfig.from_dict(content["config"]).text if "config" in content else TextConfig()
    path = write_embedding_table(config, texts, args.out)
    print(f"wrote {len(set(texts))} embeddings to {path}; use with VESSA_TEXT_EMBEDDINGS={path}")
    return 0

"""`vessa evaluate`: Dice and 95th-percentile Hausdorff distance of segmentations (`vessa.evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vessa.errors import InputError
from vessa.evaluate import score_segmentations, write_scores
from vessa.io import read_segmentation
from vessa.io.atomic import check_output


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa evaluate`."""
    parser = subparsers.add_parser("evaluate", help="Dice / HD95 of predicted vs reference segmentations",
                                   description=__doc__)
    parser.add_argument("--pred", nargs="+", required=True, help="predicted segmentations")
    parser.add_argument("--ref", nargs="+", required=True, help="reference segmentations (same order)")
    parser.add_argument("--structure", action="append", help="structure(s) to score (default: all in ref)")
    parser.add_argument("--csv", metavar="FILE", help="also write the scores to this CSV file (default: print only)")
    parser.add_argument("--plot", metavar="FILE", help="also draw the Dice scores as a PNG bar plot")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if len(args.pred) != len(args.ref):
        raise InputError(f"{len(args.pred)} predictions but {len(args.ref)} references")
    for path, option in ((args.csv, "--csv"), (args.plot, "--plot")):
        if path:
            check_output(path, option)
    scores = []
    for pred, ref in zip(args.pred, args.ref, strict=True):
        scores += score_segmentations(Path(pred).name.split(".")[0], read_segmentation(pred),
                                      read_segmentation(ref), args.structure)
    write_scores(scores, args.csv, args.plot)
    for score in scores:
        print(f"{score.case:20s} {score.structure:24s} Dice {score.dice:.3f}  HD95 {score.hd95_mm:.1f} mm")
    written = ", ".join(path for path in (args.csv, args.plot) if path)
    summary = f"mean Dice {np.mean([s.dice for s in scores]):.3f} over {len(scores)}"
    print(summary + (f"; wrote {written}" if written else ""))
    return 0

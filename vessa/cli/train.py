"""`vessa train --spec JOB.json [--resume] [--stage 1|2]`: run a training job, JSON lines on stdout.

`vessa train --recipe starter --output DIR [--steps N] [--time-budget S] [--device D] [--workers W]` writes
the recipe's cohort manifest and spec (vessa.train.recipes) into DIR first, then runs it the same way
(default 4000 steps; --time-budget caps the time; how long it takes: benchmarks/RESULTS.md).

Also runs under torchrun: `torchrun --nproc_per_node N -m vessa.cli train --spec JOB.json`.
Exit codes: 0 finished (or time budget spent), 3 cancelled (SIGTERM/SIGINT), 2 job error.
A start that is refused (bad spec or options, checkpoints there without --resume, nothing to
resume, a device that is not there) writes nothing, status.json included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

STAGE_NAMES = {"1": "stage1", "2": "stage2", "stage1": "stage1", "stage2": "stage2"}
# options that only shape a recipe's spec, and their values when not given
RECIPE_DEFAULTS = {"steps": 4000, "time_budget": None, "device": "auto", "workers": 0}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the `train` subcommand."""
    parser = subparsers.add_parser(
        "train", help="train a model from a job spec (progress as JSON lines on stdout)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", type=Path, help="job spec JSON (see docs/training.md)")
    source.add_argument("--recipe", choices=["starter"],
                        help="write a named recipe's cohort + spec into --output (from the sample data), then train")
    parser.add_argument("--output", type=Path, help="folder for --recipe (required with it)")
    parser.add_argument("--steps", type=int, help="steps for --recipe (default: 4000)")
    parser.add_argument("--time-budget", type=float, help="seconds for --recipe (stop and save when spent)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device for --recipe (default: auto)")
    parser.add_argument("--workers", type=int,
                        help="processes building batches ahead for --recipe (same batches; use on GPU; default: 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in the spec's output_dir")
    parser.add_argument("--stage", choices=sorted(STAGE_NAMES), help="override the spec's stage")
    parser.set_defaults(func=run_train)


def _recipe_options(args: argparse.Namespace) -> dict:
    """The recipe options with their defaults; JobError for a recipe without --output, or for
    recipe options given with --spec (a spec file says those itself)."""
    from vessa.errors import JobError

    given = [f"--{name.replace('_', '-')}" for name in [*RECIPE_DEFAULTS, "output"] if getattr(args, name) is not None]
    if args.spec is not None and given:
        raise JobError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to --recipe; with --spec, "
                       "set them in the spec file")
    if args.recipe and args.output is None:
        raise JobError(f"--recipe {args.recipe} needs --output: the folder for its cohort, spec and checkpoints")
    return {name: default if getattr(args, name) is None else getattr(args, name)
            for name, default in RECIPE_DEFAULTS.items()}


def run_train(args: argparse.Namespace) -> int:
    """Load the spec, train (or resume), and report every outcome as a progress event; once the
    job has started, in status.json too."""
    from vessa.errors import VessaError
    from vessa.jobs import EXIT_CANCELLED, CancelFlag, JobSpec, ProgressWriter, StatusFile
    from vessa.train.distributed import env_rank, init_distributed, resolve_device, shutdown
    from vessa.train.trainer import resume_point, run_job

    main_process = env_rank() == 0
    progress = ProgressWriter(enabled=main_process)
    try:
        options = _recipe_options(args)
        if args.recipe:
            from vessa.train.recipes import RECIPES, recipe_job_dir

            resume_point(recipe_job_dir(args.output), args.resume)  # refused before the recipe writes anything
            args.spec = RECIPES[args.recipe](args.output, steps=options["steps"], time_budget_s=options["time_budget"],
                                             device=options["device"], workers=options["workers"])
        spec = JobSpec.from_json(args.spec)
        if args.stage:
            spec = spec.replace(stage=STAGE_NAMES[args.stage])
        resume_from = resume_point(spec.output_dir, args.resume)
        resolve_device(spec.device)
    except VessaError as error:
        progress.error(str(error))
        raise
    progress.stage, progress.total = spec.stage, spec.steps
    status = StatusFile(spec.output_dir, enabled=main_process)
    with CancelFlag() as cancel:
        try:
            runtime = init_distributed(spec.device)
            result = run_job(spec, runtime, resume_from, progress, cancel, status)
        except KeyboardInterrupt:
            # A second signal: stop now, without a new checkpoint.
            progress.cancelled(status.fields.get("step", 0), status.fields.get("last_checkpoint"))
            status.update("cancelled", message="interrupted before a checkpoint could be saved")
            raise
        except Exception as error:
            message = str(error) if isinstance(error, VessaError) else f"{type(error).__name__}: {error}"
            progress.error(message)
            status.update("failed", message=message)
            raise
        finally:
            shutdown()
    return EXIT_CANCELLED if result.cancelled else 0

"""The training methods, one module each, and the table a job's "<stage>:<method>" picks from.

Each method builds a `TrainingSetup` (its `Objective` and batches, `vessa.train.objective`)
from a `JobSpec`: `stage1` (the template-guided assistant, episodically), `supervised` (the
baseline), `unimatch` (UniMatch V2), `vessa_in_the_loop` (UniMatch V2 with VESSA's
pseudo-labels) and `dusss` (DuSSS, with `dusss_contrastive`). `stage2_base` is what the
semi-supervised stage-2 methods share.
"""

from __future__ import annotations

from vessa.errors import JobError
from vessa.jobs.spec import JobSpec
from vessa.train.distributed import Runtime
from vessa.train.methods import dusss, stage1, supervised, unimatch, vessa_in_the_loop
from vessa.train.objective import SetupFactory, TrainingSetup

METHODS: dict[str, SetupFactory] = {
    "stage1:vessa": stage1.build_stage1,
    "stage2:supervised": supervised.build_supervised,
    "stage2:unimatch": unimatch.build_unimatch,
    "stage2:vessa": vessa_in_the_loop.build_vessa,
    "stage2:dusss": dusss.build_dusss,
}


def build_setup(spec: JobSpec, runtime: Runtime) -> TrainingSetup:
    """Build the objective and data of `spec`'s method on `runtime`'s device; JobError if the
    stage has no such method."""
    key = f"{spec.stage}:{spec.method}"
    if key not in METHODS:
        raise JobError(f"method {key!r} is not available yet (available: {', '.join(sorted(METHODS))})")
    return METHODS[key](spec, runtime)

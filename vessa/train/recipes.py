"""Named training recipes: a cohort made from the real sample data plus a fixed job spec.

`starter` (stage 1): the recipe of our shipped starter checkpoint (docs/methods.md §1.4). No public
medical set or pretrained vision weights are reachable, so the model learns *how to match*
from the label maps we have: Colin27 T1 with the JHU and Brodmann atlases, the stardist
nuclei and the lesions of pyradiomics' brain1 (MR) and lung1 (CT) are the training cases
(every slice of an episode re-deformed and re-rendered, `vessa.train.data.episodes`); the AICHA
regions are the validation family (model selection). Held out for honest numbers: the
Harvard-Oxford regions (unseen structures, benchmarks/bench_quality.py), the AAL regions
(the stage-2 benchmark's structures, benchmarks/bench_stage2_quality.py, so VESSA in the
loop has never seen them), the lesions of brain2 and lung2 (unseen patients, segmented from
brain1/lung1 templates) and breast1. Model: sam2.1 Hiera-T layout with half-width trunk
(embed_dim 48) and 2 memory-attention layers at 128 px, so it also trains on 2 CPU cores and
ships in under 40 MB (float16 weights), with the location prior on (initial gate 4); lr 1e-4
and per-slice poses at 0.4 of the episode defaults, the settings whose validation held up on
a GPU (docs/stage1_training.md); matching on the embedding alone (`fine_levels` []), as the
shipped starter was trained, not the newer s1/s0 default (benchmarks/RESULTS.md, "Stage-1 matching").
"""

from __future__ import annotations

import json
from pathlib import Path

from vessa.errors import JobError
from vessa.io.atomic import atomic_path
from vessa.jobs.spec import JobSpec

STARTER_TRAIN = ("colin27_jhu", "colin27_brodmann", "nuclei2d", "nuclei3d", "brain1", "lung1")
STARTER_VAL = ("colin27_aicha",)
STARTER_MODEL = "half_tiny"
STARTER_FINE_LEVELS: list[str] = []  # the shipped starter matches on the embedding alone (trained before s1/s0)


def _sample_cases(names: tuple[str, ...]) -> dict[str, object]:
    from vessa.samples import fetch, load_manifest

    cases = {}
    for sample_set in ("colin27", "stardist", "pyradiomics"):
        fetch(sample_set)
        cases.update({case.case_id: case for case in load_manifest(sample_set)})
    missing = [name for name in names if name not in cases]
    if missing:
        raise JobError(f"sample cases {missing} not found (have: {', '.join(sorted(cases))})")
    return cases


def recipe_job_dir(output_dir: str | Path) -> Path:
    """The job folder (the spec's output_dir: checkpoints, status.json) of a recipe written into `output_dir`."""
    return Path(output_dir).resolve() / "job"


def starter_spec(output_dir: str | Path, steps: int = 4000, time_budget_s: float | None = None,
                 device: str = "auto", workers: int = 0) -> Path:
    """Write the starter recipe's cohort manifest and job spec into `output_dir`; return the spec path.

    `workers` only sets how many processes build episodes ahead: the batches, so the run, are the same.
    """
    output_dir = Path(output_dir).resolve()
    cases = _sample_cases(STARTER_TRAIN + STARTER_VAL)
    entries = []
    for split, names in (("train", STARTER_TRAIN), ("val", STARTER_VAL)):
        for name in names:
            case = cases[name]
            entries.append({"id": name, "image": str(case.image), "segmentation": str(case.segmentation),
                            "modality": case.modality, "split": split})
    structures = sorted({n for name in STARTER_TRAIN for n in cases[name].segment_names})
    manifest = output_dir / "manifest.json"
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps({"version": 1, "structures": structures, "cases": entries}, indent=2))
    spec = JobSpec(
        stage="stage1", method="vessa", manifest=str(manifest), output_dir=str(recipe_job_dir(output_dir)),
        structures=["*"], steps=steps, batch_size=4, lr=1e-4, weight_decay=0.05, schedule="cosine",
        warmup_steps=50, grad_clip=1.0, checkpoint_every=100, keep_checkpoints=2,
        log_every=10, seed=0, device=device, image_size=128, time_budget_s=time_budget_s,
        recipe="starter", options={"sam2_config": STARTER_MODEL, "val_episodes": 24, "location_prior": 4.0,
                                  "affine_scale": 0.4, "fine_levels": STARTER_FINE_LEVELS, "workers": workers},
    )
    path = output_dir / "job.json"
    spec.to_json(path)
    return path


RECIPES = {"starter": starter_spec}

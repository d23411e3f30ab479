"""Stage-1 episodes: a target slice, K template slices of the same structure, and its name.

Real label maps with one subject (Colin27 atlases) or few subjects (pyradiomics lesions) are
turned into many "subjects" the SynthSeg/UniverSeg way (docs/methods.md §1.4): every slice of an
episode gets its own random elastic/affine deformation (MONAI `Rand2DElasticd`), and its
intensities are either the real ones with a bias field, gamma and noise, or drawn anew per
label (a random Gaussian mixture over the slice's label map, then blurred) so the model
learns to match the template, not to remember one contrast.

Each episode also carries the templates' location prior as the segmenter computes it at
inference: per template subject, its mask slice at the target slice's relative position in
the volume (empty where the structure is not there), under its own random deformation,
averaged over the K templates.

Episode `step` is a pure function of (seed, step): resuming a run reproduces its batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Rand2DElasticd
from monai.utils import convert_to_tensor

from vessa.errors import JobError
from vessa.model.slicing import ISOTROPY_TOLERANCE, SquareFrame, relative_slices


@dataclass
class EpisodeCase:
    """A subject: intensities scaled to [0, 1] (k, j, i), its structures' masks, the spacing
    per array axis (k, j, i) in mm and the modality."""

    case_id: str
    image: np.ndarray
    masks: dict[str, np.ndarray]
    modality: str = ""
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    labelmap: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, np.float32)
        self.labelmap = np.zeros(self.image.shape, np.int32)
        for index, mask in enumerate(self.masks.values(), start=1):
            if mask.shape != self.image.shape:
                raise JobError(
                    f"case {self.case_id}: a mask's shape {mask.shape} differs from {self.image.shape}"
                )
            self.labelmap[mask] = index


@dataclass
class EpisodeConfig:
    """How episodes are drawn (sizes in pixels of the square model input)."""

    image_size: int = 256
    max_templates: int = 3
    min_area: int = 20  # slices where the structure covers fewer voxels are not used
    z_jitter: int = 3  # template slice = target slice +- this many slices
    synthetic_probability: float = 0.5  # per slice: GMM intensities instead of real ones
    absent_probability: float = 0.25  # target slice without the structure (teaches "absent")
    elastic_magnitude: tuple[float, float] = (0.0, 3.0)
    # per-slice random pose: rotation (rad), scale and translation (fraction of S) ranges,
    # all multiplied by affine_scale; two slices of an episode differ by up to twice these
    affine_scale: float = 1.0


class EpisodeSampler:
    """Draws batches of stage-1 episodes from cases; `batch(step)` is deterministic."""

    def __init__(self, cases: list[EpisodeCase], config: EpisodeConfig, seed: int = 0,
                 structures: list[str] | None = None):
        self.cases, self.config, self.seed = cases, config, seed
        # (case index, slicing axis, structure, usable slices); a case is cut along every axis
        # the segmenter may cut it along (in-plane isotropic), as VolumeSegmenter does.
        self.tasks: list[tuple[int, int, str, np.ndarray]] = []
        self.absent: list[np.ndarray] = []  # per task: the slices where the structure is absent
        for case_index, case in enumerate(cases):
            for axis in sliceable_axes(case.image.shape, case.spacing):
                for name, mask in case.masks.items():
                    if structures is not None and name not in structures:
                        continue
                    area = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(1)
                    slices = np.flatnonzero(area >= config.min_area)
                    if len(slices):
                        self.tasks.append((case_index, axis, name, slices))
                        self.absent.append(np.flatnonzero(area == 0))
        self.by_name: dict[tuple[str, int], list[int]] = {}
        by_case: dict[int, list[int]] = {}
        for index, (case_index, axis, name, _) in enumerate(self.tasks):
            self.by_name.setdefault((name, axis), []).append(index)
            by_case.setdefault(case_index, []).append(index)
        self.by_case = list(by_case.values())
        if not self.tasks:
            raise JobError(
                f"no structure covers >= {config.min_area} voxels on any slice of the training cases"
            )
        size, pose = config.image_size, config.affine_scale
        common = {"spacing": (size // 8, size // 8), "magnitude_range": config.elastic_magnitude, "prob": 1.0,
                  "rotate_range": 0.25 * pose, "scale_range": 0.15 * pose, "translate_range": size / 16 * pose,
                  "padding_mode": "zeros"}
        self.deform = Rand2DElasticd(keys=["image", "labels", "mask"], mode=("bilinear", "nearest", "nearest"),
                                     **common)
        self.deform_mask = Rand2DElasticd(keys=["mask"], mode="nearest", **common)

    def batch(self, step: int, batch_size: int) -> dict:
        """Episode batch `step`: images/masks as float tensors, K templates shared by the batch."""
        rng = np.random.default_rng([self.seed, step])
        k = int(rng.integers(1, self.config.max_templates + 1))
        episodes = [self._episode(rng, k) for _ in range(batch_size)]
        return {
            "image": torch.stack([e[0][0] for e in episodes]),  # [B,1,S,S] in [0,1]
            "mask": torch.stack([e[1][0] for e in episodes]),  # [B,1,S,S] in {0,1}
            "templates": torch.stack([torch.stack(e[0][1:]) for e in episodes]),  # [B,K,1,S,S]
            "template_masks": torch.stack([torch.stack(e[1][1:]) for e in episodes]),  # [B,K,1,S,S]
            "location_prior": torch.stack([e[3] for e in episodes]),  # [B,1,S,S] in [0,1]
            "text": [e[2] for e in episodes],
        }

    def _episode(self, rng: np.random.Generator, k: int):
        # a case first, then one of its structures: small cases are not drowned by big atlases
        case_tasks = self.by_case[int(rng.integers(len(self.by_case)))]
        task = int(case_tasks[int(rng.integers(len(case_tasks)))])
        case_index, axis, name, slices = self.tasks[task]
        # Most target slices show the structure; some do not, as most slices of a volume at
        # inference, so that the object score learns "absent" (the loss then has no mask term).
        absent = self.absent[task]
        if len(absent) and rng.random() < self.config.absent_probability:
            target = int(rng.choice(absent))
        else:
            target = int(rng.choice(slices))
        relative = float(np.clip((target - slices[0]) / max(1, slices[-1] - slices[0]), 0.0, 1.0))
        # Templates come from other subjects with this structure and modality when there are any
        # (with probability 0.8 each), else from the same subject under another deformation.
        modality = self.cases[case_index].modality
        others = [t for t in self.by_name[(name, axis)]
                  if self.tasks[t][0] != case_index and self.cases[self.tasks[t][0]].modality == modality]
        chosen = [(case_index, target)]
        for _ in range(k):
            source, _, _, source_slices = self.tasks[int(rng.choice(others)) if others and rng.random() < 0.8
                                                     else task]
            # the template slice at the target's relative height within the structure
            wanted = source_slices[0] + relative * (source_slices[-1] - source_slices[0])
            wanted += int(rng.integers(-self.config.z_jitter, self.config.z_jitter + 1))
            chosen.append((source, int(source_slices[np.argmin(np.abs(source_slices - wanted))])))
        images, masks = [], []
        for source, z in chosen:
            image, mask = self._subject_slice(self.cases[source], axis, name, z, rng)
            images.append(image)
            masks.append(mask)
        count = self.cases[case_index].image.shape[axis]
        prior = torch.stack([
            self._prior_slice(self.cases[source], axis, name,
                              int(relative_slices(count, self.cases[source].image.shape[axis])[target]), rng)
            for source, _ in chosen[1:]
        ]).mean(0)
        return images, masks, name, prior

    def _prior_slice(self, case: EpisodeCase, axis: int, name: str, z: int, rng: np.random.Generator) -> torch.Tensor:
        """Mask slice z along `axis` of a new random "subject" (may be empty), framed and deformed: [1,S,S]."""
        frame = self._frame(case, axis)
        plane = torch.from_numpy(np.ascontiguousarray(np.take(case.masks[name], z, axis=axis)).astype(np.float32))
        self.deform_mask.set_random_state(int(rng.integers(2**31)))
        out = self.deform_mask({"mask": frame.to_square(plane[None, None], "nearest")[0]})
        return (convert_to_tensor(out["mask"], track_meta=False) > 0.5).float()

    def _frame(self, case: EpisodeCase, axis: int) -> SquareFrame:
        """The inference frame of `case`'s slices along `axis`."""
        rows, cols = (n for a, n in enumerate(case.image.shape) if a != axis)
        row_spacing, col_spacing = (s for a, s in enumerate(case.spacing) if a != axis)
        return SquareFrame.for_slices(rows, cols, row_spacing, col_spacing, self.config.image_size)

    def _subject_slice(self, case: EpisodeCase, axis: int, name: str, z: int, rng: np.random.Generator):
        """Slice z along `axis` of a new random "subject": framed as at inference (`SquareFrame`),
        deformed, re-rendered; returns ([1,S,S] image, [1,S,S] mask)."""
        frame = self._frame(case, axis)

        def square(array: np.ndarray, mode: str = "bilinear") -> torch.Tensor:
            plane = torch.from_numpy(np.ascontiguousarray(np.take(array, z, axis=axis)))
            return frame.to_square(plane[None, None], mode)[0]

        data = {"image": square(case.image), "labels": square(case.labelmap, "nearest"),
                "mask": square(case.masks[name].astype(np.float32))}
        self.deform.set_random_state(int(rng.integers(2**31)))
        # plain tensors: MONAI's MetaTensor would slow every later torch op (the model's too)
        out = {key: convert_to_tensor(value, track_meta=False)[0] for key, value in self.deform(data).items()}
        if rng.random() < self.config.synthetic_probability:
            image = gmm_render(out["labels"].round().long(), rng)
        else:
            image = real_render(out["image"], rng)
        return image.clamp(0, 1)[None].float(), (out["mask"] > 0.5)[None].float()


def sliceable_axes(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> list[int]:
    """Array axes a volume may be cut along: a length-1 axis (2D image), else every axis whose two
    in-plane spacings agree (the rule of `vessa.model.slicing.slicing_axis`) and that has > 1 slice."""
    singles = [axis for axis in range(3) if shape[axis] == 1]
    if singles:
        return singles[:1]
    axes = []
    for axis in range(3):
        a, b = (spacing[other] for other in range(3) if other != axis)
        if abs(a - b) <= ISOTROPY_TOLERANCE * max(a, b):
            axes.append(axis)
    return axes or [int(np.argmax(spacing))]


def gmm_render(labels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """SynthSeg-style intensities: a random mean/std per label, then a random Gaussian blur."""
    n = int(labels.max()) + 1
    means = torch.from_numpy(rng.uniform(0, 1, n)).float()
    stds = torch.from_numpy(rng.uniform(0.01, 0.1, n)).float()
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    image = means[labels] + stds[labels] * torch.randn(labels.shape, generator=generator)
    sigma = float(rng.uniform(0.1, 1.5))
    radius = max(1, int(3 * sigma))
    kernel = torch.exp(-(torch.arange(-radius, radius + 1).float() ** 2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum())[None, None]
    image = F.conv2d(image[None, None], kernel[..., None], padding=(radius, 0))
    image = F.conv2d(image, kernel[:, :, None], padding=(0, radius))[0, 0]
    return (image - image.min()) / (image.max() - image.min() + 1e-6)


def real_render(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Real intensities with a smooth multiplicative bias field, a gamma change and noise."""
    size = image.shape[-1]
    coarse = torch.from_numpy(rng.normal(0, 0.15, (1, 1, 4, 4))).float()
    bias = F.interpolate(coarse, size=image.shape, mode="bicubic", align_corners=True)[0, 0].exp()
    gamma = float(np.exp(rng.normal(0, 0.3)))
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    noise = torch.randn((size, size), generator=generator) * float(rng.uniform(0, 0.05))
    return (image.clamp(0, 1) * bias).clamp(0, 1) ** gamma + noise

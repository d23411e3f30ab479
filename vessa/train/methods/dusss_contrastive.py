"""DuSSS parts (docs/methods.md §2): semantic-similarity-supervised contrastive losses and text heads.

Paper equations, our constants (docs/methods.md §2.2 [D]): embeddings become diagonal
Gaussians (μ, σ) through `GaussianHead`; `D_2W = ‖μ1−μ2‖² + ‖σ1−σ2‖²`; `D_s` = Euclidean distance of the
L2-normalised embeddings (+1e-6); `D_u = a·D_2W + b`; `D_SSS = exp(−λ·D_u / D_s)`;
`ŝim = 1 − (1 − sim)·D_SSS` in numerator and denominator of the InfoNCE (a=1/200, b=4, λ=5,
learnable τ from 0.07). `DuSSSHeads` holds the trainable parts that sit on a student's
bottleneck: image and text projections, their Gaussian heads, the pixel grounding head and τ.
How the objective uses them (regions instead of report texts): docs/stage2.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SSSConstants:
    """D_u = a·D_2W + b and D_SSS = exp(−lam·D_u / D_s) (docs/methods.md §2.2: a = 1/200, b = 4, λ = 5)."""

    a: float = 1 / 200
    b: float = 4.0
    lam: float = 5.0


class GaussianHead(nn.Module):
    """Embedding [N, in_dim] -> diagonal Gaussian: (μ [N, dim], σ = exp(logσ) [N, dim])."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.mu = nn.Linear(in_dim, dim)
        self.log_sigma = nn.Linear(in_dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(x), torch.exp(self.log_sigma(x).clamp(-10.0, 10.0))


def wasserstein2_gaussian(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> torch.Tensor:
    """Squared 2-Wasserstein distance of diagonal Gaussians: ‖μ1−μ2‖² + ‖σ1−σ2‖² over the last
    dim (inputs broadcast, so `mu1[:, None]` against `mu2[None]` gives all pairs)."""
    return ((mu1 - mu2) ** 2).sum(-1) + ((sigma1 - sigma2) ** 2).sum(-1)


def sss_similarity(
    x1: torch.Tensor,
    x2: torch.Tensor,
    gauss1: tuple[torch.Tensor, torch.Tensor],
    gauss2: tuple[torch.Tensor, torch.Tensor],
    constants: SSSConstants = SSSConstants(),
) -> torch.Tensor:
    """D_SSS [N, M] between embeddings x1 [N, D] and x2 [M, D] whose Gaussians are
    gauss1 = (μ [N, G], σ [N, G]) and gauss2 = (μ [M, G], σ [M, G])."""
    d_s = torch.cdist(F.normalize(x1, dim=-1), F.normalize(x2, dim=-1)) + 1e-6
    (mu1, sigma1), (mu2, sigma2) = gauss1, gauss2
    d_u = constants.a * wasserstein2_gaussian(mu1[:, None], sigma1[:, None], mu2[None], sigma2[None]) + constants.b
    return torch.exp(-constants.lam * d_u / d_s)


def adjusted_similarity(sim: torch.Tensor, d_sss: torch.Tensor) -> torch.Tensor:
    """ŝim = 1 − (1 − sim)·D_SSS."""
    return 1 - (1 - sim) * d_sss


def multi_positive_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """InfoNCE of rows of `logits` [N, M] whose positive columns are `positives` (bool):
    mean over rows with a positive of −log(Σ_pos exp / Σ_all exp); with one positive per
    row this is the usual InfoNCE / cross-entropy. 0 if no row has a positive."""
    rows = positives.any(dim=1)
    if not rows.any():
        return logits.sum() * 0
    logits, positives = logits[rows], positives[rows]
    positive = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - positive).mean()


def symmetric_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """½(A→B + B→A) InfoNCE over the logits [N, M] between two sets (CLIP-style)."""
    return 0.5 * (multi_positive_nce(logits, positives) + multi_positive_nce(logits.T, positives.T))


def region_embeddings(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight: torch.Tensor | None = None,
    min_area: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean features of every (image, class) region: features [B, D, h, w], labels [B, H, W]
    (class indices, H and W multiples of h and w), optional pixel weights [B, H, W].
    See `soft_region_embeddings` for the result."""
    onehot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).to(features.dtype)
    if weight is not None:
        onehot = onehot * weight[:, None].to(features.dtype)
    return soft_region_embeddings(features, onehot, min_area)


def soft_region_embeddings(
    features: torch.Tensor, masks: torch.Tensor, min_area: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask-weighted mean features of every (image, class): features [B, D, h, w], soft masks
    [B, C, H, W] in [0, 1] (H, W multiples of h, w), area-downsampled to h x w; regions
    covering < `min_area` feature cells are dropped.
    Returns (embeddings [R, D], class index [R], image index [R])."""
    h, w = features.shape[-2:]
    cells = F.adaptive_avg_pool2d(masks.to(features.dtype), (h, w))  # [B, C, h, w] fraction of each cell
    area = cells.sum(dim=(2, 3))  # [B, C]
    pooled = torch.einsum("bchw,bdhw->bcd", cells, features) / area.clamp_min(1e-6)[..., None]
    keep = area >= min_area
    image_index, class_index = keep.nonzero(as_tuple=True)
    return pooled[keep], class_index, image_index


def contrastive_logits(
    a: torch.Tensor, b: torch.Tensor, tau: torch.Tensor,
    gauss_a: tuple[torch.Tensor, torch.Tensor] | None = None,
    gauss_b: tuple[torch.Tensor, torch.Tensor] | None = None,
    constants: SSSConstants = SSSConstants(),
) -> torch.Tensor:
    """cos(a, b) / τ, or ŝim(a, b) / τ when both Gaussians are given (SSS)."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if gauss_a is not None and gauss_b is not None:
        sim = adjusted_similarity(sim, sss_similarity(a, b, gauss_a, gauss_b, constants))
    return sim / tau


@dataclass
class HeadOutputs:
    """What `DuSSSHeads` computes for one batch (D = the heads' dim, C classes, R regions).

    text [C, D] projected class texts and text_gauss; text_logits [B, C, H, W] pixel-text
    logits cos(v_f, t_c)/τ; regions [R, D] projected region embeddings, region_gauss,
    region_class / region_image [R]; grounded [G, D] text-mask-pooled pixel embeddings,
    grounded_class / grounded_image [G]. Gaussians are None without SSS.
    """

    text: torch.Tensor
    text_gauss: tuple[torch.Tensor, torch.Tensor] | None
    text_logits: torch.Tensor
    regions: torch.Tensor
    region_gauss: tuple[torch.Tensor, torch.Tensor] | None
    region_class: torch.Tensor
    region_image: torch.Tensor
    grounded: torch.Tensor
    grounded_class: torch.Tensor
    grounded_image: torch.Tensor


class DuSSSHeads(nn.Module):
    """Trainable DuSSS parts on a student's bottleneck (last encoder map, `bottleneck` channels).

    image_proj / text_proj: to a shared `dim`-d space; image_gauss / text_gauss: their
    Gaussians (only with `gaussian`, i.e. SSS on); grounding (`pixel_embeddings`): bottleneck
    [B, C, h, w] -> 1x1 conv, bilinear to S/4 -> 3x3 conv, ReLU, 1x1 conv = pixel embeddings v_f
    [B, dim, S/4, S/4]; log_tau: learnable temperature (τ = exp(log_tau), initially 0.07).
    """

    def __init__(self, bottleneck: int, text_dim: int, dim: int = 128, tau: float = 0.07, gaussian: bool = True):
        super().__init__()
        self.image_proj = nn.Sequential(nn.Linear(bottleneck, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.image_gauss = GaussianHead(dim, dim) if gaussian else None
        self.text_gauss = GaussianHead(dim, dim) if gaussian else None
        self.grounding_in = nn.Conv2d(bottleneck, dim, 1)
        self.grounding_out = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 1))
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(1e-3, 1.0)

    def pixel_text_logits(self, pixels: torch.Tensor, text: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """cos(v_f, t_c)/τ [B, C, *size] of pixel embeddings [B, D, h, w] and texts [C, D]."""
        logits = torch.einsum("bdhw,cd->bchw", F.normalize(pixels, dim=1), F.normalize(text, dim=-1)) / self.tau
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def pixel_embeddings(self, bottleneck: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Grounding head: v_f [B, dim, H/4, W/4] for an output of size (H, W)."""
        x = F.interpolate(self.grounding_in(bottleneck), size=(size[0] // 4, size[1] // 4), mode="bilinear",
                          align_corners=False)
        return self.grounding_out(x)

    def text_logits(self, bottleneck: torch.Tensor, text: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Per-class text-grounding logits [B, C, *size] from the bottleneck and projected texts [C, D]."""
        return self.pixel_text_logits(self.pixel_embeddings(bottleneck, size), text, size)

    def project_regions(self, bottleneck: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
                        classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected region embeddings [R, D] of (image, class) regions of `labels` [B, H, W]."""
        pooled, region_class, region_image = region_embeddings(bottleneck, labels, classes, weight)
        return self.image_proj(pooled), region_class, region_image

    def forward(self, bottleneck: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                weight: torch.Tensor | None, size: tuple[int, int]) -> HeadOutputs:
        """All head outputs for a batch: bottleneck [B, C4, h, w], frozen class text features
        [C, T], region labels [B, H, W] with optional pixel weights, output size (H, W)."""
        classes = text_features.shape[0]
        text = self.text_proj(text_features)
        pixels = self.pixel_embeddings(bottleneck, size)
        text_logits = self.pixel_text_logits(pixels, text, size)
        regions, region_class, region_image = self.project_regions(bottleneck, labels, weight, classes)
        grounded, grounded_class, grounded_image = soft_region_embeddings(pixels, torch.softmax(text_logits, dim=1))
        gaussian = self.image_gauss is not None
        return HeadOutputs(
            text=text,
            text_gauss=self.text_gauss(text) if gaussian else None,
            text_logits=text_logits,
            regions=regions,
            region_gauss=self.image_gauss(regions) if gaussian else None,
            region_class=region_class,
            region_image=region_image,
            grounded=grounded,
            grounded_class=grounded_class,
            grounded_image=grounded_image,
        )

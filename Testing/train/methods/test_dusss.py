"""DuSSS parts: Wasserstein distance, SSS similarity, InfoNCE terms, region pooling, heads."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from vessa.train.methods.dusss_contrastive import (
    DuSSSHeads,
    GaussianHead,
    SSSConstants,
    adjusted_similarity,
    contrastive_logits,
    multi_positive_nce,
    region_embeddings,
    sss_similarity,
    symmetric_nce,
    wasserstein2_gaussian,
)


def w2_full_covariance(mu1, cov1, mu2, cov2):
    """Closed form for general Gaussians: ‖Δμ‖² + tr(Σ1 + Σ2 − 2(Σ1^½ Σ2 Σ1^½)^½)."""
    root = sqrtm(cov1)
    cross = np.real(sqrtm(root @ cov2 @ root))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * cross))


def test_wasserstein2_known_value_and_closed_form():
    w2 = wasserstein2_gaussian(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]),
                               torch.tensor([3.0, 4.0]), torch.tensor([2.0, 1.0]))
    assert w2.item() == pytest.approx(26.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
        s1, s2 = rng.uniform(0.1, 3, size=4), rng.uniform(0.1, 3, size=4)
        expected = w2_full_covariance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
        got = wasserstein2_gaussian(*(torch.tensor(v) for v in (mu1, s1, mu2, s2)))
        assert got.item() == pytest.approx(expected, rel=1e-6)


def test_wasserstein2_broadcasts_to_all_pairs():
    mu = torch.tensor([[0.0], [1.0], [3.0]])
    sigma = torch.ones(3, 1)
    pairs = wasserstein2_gaussian(mu[:, None], sigma[:, None], mu[None], sigma[None])
    assert pairs.tolist() == [[0, 1, 9], [1, 0, 4], [9, 4, 0]]


def test_sss_similarity_closed_form():
    x1, x2 = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0], [3.0, 0.0]])
    same = (torch.zeros(1, 2), torch.ones(1, 2))
    other = (torch.tensor([[0.0, 0.0], [10.0, 0.0]]), torch.ones(2, 2))
    d = sss_similarity(x1, x2, same, other)
    # pair 0: D_s = sqrt(2), W2 = 0 -> exp(-5 * 4 / sqrt 2); pair 1: D_s = 1e-6 -> exp(-huge) = 0
    assert d[0, 0].item() == pytest.approx(math.exp(-5 * 4 / math.sqrt(2)), rel=1e-5)
    assert d[0, 1].item() == 0.0
    loose = sss_similarity(x1, x2[:1], same, (torch.tensor([[20.0, 0.0]]), torch.ones(1, 2)),
                           SSSConstants(a=0.01, b=0.0, lam=1.0))
    assert loose.item() == pytest.approx(math.exp(-0.01 * 400 / math.sqrt(2)), rel=1e-5)


def test_default_constants_bound_d_sss():
    # D_u >= b = 4 and D_s <= 2 for unit vectors, so D_SSS <= exp(-10): the adjusted similarity
    # stays within 1e-4 of 1 (documented in docs/stage2.md).
    torch.manual_seed(0)
    x1, x2 = torch.randn(8, 16), torch.randn(8, 16)
    head = GaussianHead(16, 16)
    d = sss_similarity(x1, x2, head(x1), head(x2))
    assert (d <= math.exp(-10) + 1e-12).all()


def test_adjusted_similarity():
    sim = torch.tensor([1.0, 0.5, -1.0])
    assert torch.allclose(adjusted_similarity(sim, torch.ones(3)), sim)
    assert torch.allclose(adjusted_similarity(sim, torch.zeros(3)), torch.ones(3))
    assert torch.allclose(adjusted_similarity(sim, torch.full((3,), 0.5)), torch.tensor([1.0, 0.75, 0.0]))


def test_multi_positive_nce_known_values():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    positives = torch.tensor([[True, False], [True, True]])
    row0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert multi_positive_nce(logits, positives).item() == pytest.approx((row0 + 0.0) / 2)
    assert multi_positive_nce(logits, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0
    eye = torch.eye(3, dtype=torch.bool)
    square = torch.randn(3, 3)
    expected = 0.5 * (torch.nn.functional.cross_entropy(square, torch.arange(3))
                      + torch.nn.functional.cross_entropy(square.T, torch.arange(3)))
    assert symmetric_nce(square, eye).item() == pytest.approx(expected.item(), rel=1e-6)


def test_contrastive_logits_with_and_without_sss():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    tau = torch.tensor(0.5)
    assert contrastive_logits(a, b, tau).tolist() == [[0.0, 2.0]]
    g = (torch.zeros(1, 2), torch.ones(1, 2)), (torch.zeros(2, 2), torch.ones(2, 2))
    with_sss = contrastive_logits(a, b, tau, *g, constants=SSSConstants(a=0.0, b=0.0, lam=1.0))
    assert with_sss.tolist() == [[0.0, 2.0]]  # D_SSS = exp(0) = 1: plain cosine
    with_sss = contrastive_logits(a, b, tau, *g)
    assert with_sss[0, 0].item() == pytest.approx(2.0, abs=1e-4)  # default constants: ŝim ≈ 1


def test_region_embeddings_pool_per_image_and_class():
    features = torch.zeros(2, 1, 2, 2)
    features[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    features[1, 0] = 10.0
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, :2, :2] = 1  # top-left cell of image 0 is class 1
    embeddings, classes, images = region_embeddings(features, labels, num_classes=2)
    assert images.tolist() == [0, 0, 1] and classes.tolist() == [0, 1, 0]
    assert embeddings[:, 0].tolist() == pytest.approx([3.0, 1.0, 10.0])
    weight = torch.ones(2, 4, 4)
    weight[0, :2, :2] = 0  # an unconfident region disappears
    _, classes, images = region_embeddings(features, labels, 2, weight)
    assert list(zip(images.tolist(), classes.tolist(), strict=True)) == [(0, 0), (1, 0)]


def test_heads_shapes_and_gradients():
    torch.manual_seed(0)
    heads = DuSSSHeads(bottleneck=16, text_dim=8, dim=12)
    assert heads.tau.item() == pytest.approx(0.07)
    mu, sigma = heads.image_gauss(heads.image_proj(torch.randn(5, 16)))
    assert mu.shape == sigma.shape == (5, 12) and (sigma > 0).all()
    bottleneck = torch.randn(2, 16, 2, 2, requires_grad=True)
    logits = heads.text_logits(bottleneck, heads.text_proj(torch.randn(3, 8)), (32, 32))
    assert logits.shape == (2, 3, 32, 32)
    assert logits.abs().max() <= 1 / heads.tau.item() + 1e-4
    logits.sum().backward()
    assert bottleneck.grad.abs().sum() > 0 and heads.log_tau.grad is not None

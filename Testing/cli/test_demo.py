"""`vessa demo`: overlay picture, and the whole demo on the real pyradiomics cases (slow)."""

import numpy as np
import pytest

from vessa.demo import overlay_png


def test_overlay_shows_the_slice_with_the_largest_reference(tmp_path):
    image = np.random.default_rng(0).normal(size=(4, 32, 32))
    reference = np.zeros(image.shape, bool)
    reference[2, 8:20, 8:20] = True
    reference[1, 10:12, 10:12] = True
    predicted = np.roll(reference, 2, axis=2)
    path = overlay_png(image, reference, predicted, tmp_path / "o.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_demo_end_to_end_on_real_sample_data(tmp_path, capsys):
    import torch

    from vessa.cli import main
    from vessa.model.assistant import TemplateAssistant
    from vessa.model.checkpoint import save_checkpoint
    from vessa.model.config import ModelConfig

    # Random weights: this checks the demo's pipeline and outputs, not segmentation quality.
    torch.manual_seed(0)
    checkpoint = save_checkpoint(TemplateAssistant(ModelConfig(sam2_config="half_tiny", image_size=128)),
                                 tmp_path / "random.pt")
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(checkpoint), "--output", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "target lung2" in printed and "Dice " in printed and "whole demo" in printed
    assert {p.name for p in out.iterdir()} == {"lung2_lesion.seg.nrrd", "lung2_lesion_probability.nrrd",
                                               "lung2_lesion.png"}

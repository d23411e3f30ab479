"""Location prior: the templates' masks at the target's relative position, as a residual on
the mask logits (learned gate) and mixed into the dense prompt; and how the segmenter builds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vessa.io import Template, Volume
from vessa.model.assistant import TemplateAssistant
from vessa.model.config import ModelConfig
from vessa.model.slicing import relative_slices
from vessa.model.volume_segmenter import VolumeSegmenter

S = 128


@pytest.fixture(scope="module")
def prior_assistant() -> TemplateAssistant:
    torch.manual_seed(0)
    return TemplateAssistant(ModelConfig(sam2_config="half_tiny", image_size=S, location_prior=4.0)).eval()


@pytest.fixture(scope="module")
def encoded(prior_assistant: TemplateAssistant):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, S, S, generator=generator)
    masks = torch.zeros(2, 1, S, S)
    masks[0, :, 30:70, 40:90] = 1
    masks[1, :, 50:90, 30:60] = 1
    with torch.no_grad():
        features = prior_assistant.encode(images)
        memory = prior_assistant.encode_templates(features[1:], masks)
    text = prior_assistant.embed_text(["thalamus"])
    return features[:1], memory.gather(torch.tensor([[0, 1]])), text


def test_prior_is_a_gated_residual_on_the_mask_logits(prior_assistant: TemplateAssistant, encoded):
    features, memory, text = encoded
    prior = torch.zeros(1, 1, S, S)
    prior[..., 20:60, 20:100] = 1.0
    with torch.no_grad():
        gated = prior_assistant.decode(features, memory, text, location_prior=prior)
        prior_assistant.prior_gate.fill_(0.0)
        try:
            plain = prior_assistant.decode(features, memory, text, location_prior=prior)
        finally:
            prior_assistant.prior_gate.fill_(4.0)
    # the gate only scales the residual: the decoder saw the same (prior-mixed) prompts
    torch.testing.assert_close(gated.logits - plain.logits, (4.0 * (2 * prior - 1)).expand(1, 3, S, S))
    torch.testing.assert_close(gated.iou, plain.iou)


def test_prior_enters_the_dense_prompt(prior_assistant: TemplateAssistant, encoded):
    features, memory, text = encoded
    inside, outside = torch.zeros(1, 1, S, S), torch.zeros(1, 1, S, S)
    inside[..., 20:60, 20:100] = 1.0
    with torch.no_grad():
        with_prior = prior_assistant.decode(features, memory, text, location_prior=inside)
        without = prior_assistant.decode(features, memory, text, location_prior=outside)
    # the decoder's own logits (residual removed) depend on where the prior is
    own = with_prior.logits - 4.0 * (2 * inside - 1)
    assert not torch.allclose(own, without.logits + 4.0)


def test_default_prior_is_the_mean_template_mask(prior_assistant: TemplateAssistant, encoded):
    features, memory, text = encoded
    with torch.no_grad():
        default = prior_assistant.decode(features, memory, text)
        explicit = prior_assistant.decode(features, memory, text, location_prior=memory.masks.mean(1))
    torch.testing.assert_close(default.logits, explicit.logits)


def test_gate_is_a_new_trainable_parameter_that_gets_gradients(prior_assistant: TemplateAssistant):
    assert any(p is prior_assistant.prior_gate for p in prior_assistant.parameter_groups()["new"])
    prior_assistant.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(1)
    masks = torch.zeros(1, 1, 1, S, S)
    masks[..., 40:80, 40:80] = 1
    out = prior_assistant(torch.randn(1, 3, S, S, generator=generator),
                          torch.randn(1, 1, 3, S, S, generator=generator), masks, ["x"])
    out.logits.mean().backward()
    assert prior_assistant.prior_gate.grad is not None and prior_assistant.prior_gate.grad.abs() > 0
    prior_assistant.zero_grad(set_to_none=True)


def test_prior_off_is_plain_and_configs_without_the_key_load():
    config = ModelConfig.from_dict({"sam2_config": "half_tiny", "image_size": S})
    assert config.location_prior == 0.0
    torch.manual_seed(0)
    plain = TemplateAssistant(config)
    assert plain.prior_gate is None and "prior_gate" not in plain.state_dict()
    with pytest.raises(ValueError, match="location_prior"):
        ModelConfig(location_prior=-1.0)


def test_relative_slices_map_ends_to_ends():
    assert relative_slices(5, 9).tolist() == [0, 2, 4, 6, 8]
    assert relative_slices(1, 7).tolist() == [3]
    assert relative_slices(3, 1).tolist() == [0, 0, 0]


def test_segmenter_passes_the_template_mask_at_each_relative_position(prior_assistant, monkeypatch):
    """Target and template of 10 slices: the structure fills template slices 3-5, so the prior
    of target slices 3-5 is that mask and every other slice's prior is empty (even though
    their template *images* are the nearest slices showing the structure)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((10, 24, 24), bool)
    mask[3:6, 6:18, 8:16] = True
    template = Template(Volume(rng.random((10, 24, 24)).astype(np.float32)), mask, "blob", case_id="t")
    target = Volume(rng.random((10, 24, 24)).astype(np.float32))
    seen: list[torch.Tensor] = []
    decode = prior_assistant.decode

    def spy(*args, **kwargs):
        seen.append(kwargs["location_prior"].clone())
        return decode(*args, **kwargs)

    monkeypatch.setattr(prior_assistant, "decode", spy)
    VolumeSegmenter(prior_assistant, device="cpu", batch_size=4).segment(target, [template], "blob")
    priors = torch.cat(seen)[:, 0]
    assert priors.shape == (10, S, S)
    area = priors.sum(dim=(1, 2))
    assert (area[3:6] > 0).all() and (area[:3] == 0).all() and (area[6:] == 0).all()
    # the frame maps the 24 x 24 slice onto 128 x 128: mask rows 6-17, cols 8-15 -> x 128/24
    inside = priors[4] > 0.5
    rows, cols = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
    assert abs(int(rows[0]) - 32) <= 1 and abs(int(rows[-1]) - 95) <= 1
    assert abs(int(cols[0]) - 43) <= 1 and abs(int(cols[-1]) - 85) <= 1

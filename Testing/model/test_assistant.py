"""TemplateAssistant: forward shapes, gradients, prompts/text actually used, predict path."""

from __future__ import annotations

import pytest
import torch

from vessa.model.assistant import TemplateAssistant
from vessa.model.sam2_adapter import ImageFeatures

S = 256


def episode(batch: int = 2, count: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, 3, S, S, generator=generator)
    templates = torch.randn(batch, count, 3, S, S, generator=generator)
    masks = torch.zeros(batch, count, 1, S, S)
    masks[..., 80:160, 60:140] = 1.0
    return target, templates, masks


@pytest.fixture(scope="module")
def encoded(assistant: TemplateAssistant):
    """Features of one target and the memory of one template (eval mode), for decode tests."""
    target, templates, masks = episode(batch=1, count=1)
    with torch.no_grad():
        features = assistant.eval().encode(torch.cat([target, templates[:, 0]]))
        memory = assistant.encode_templates(features[1:], masks[:, 0])
    return features[:1], memory.gather(torch.zeros(1, 1, dtype=torch.long))


def test_forward_shapes(assistant: TemplateAssistant):
    assistant.eval()
    with torch.no_grad():
        out = assistant(*episode(count=1), ["liver", "left kidney"])
    assert out.logits.shape == (2, 3, S, S)
    assert out.low_res_logits.shape == (2, 3, S // 4, S // 4)
    assert out.iou.shape == (2, 3) and out.object_score_logits.shape == (2, 1)
    assert out.similarity.shape == (2, 1, S // 4, S // 4)  # fused with the s1/s0 levels on the s0 grid
    assert torch.equal(out.best, out.iou.argmax(-1))
    assert torch.equal(out.best_logits()[:, 0], out.logits[torch.arange(2), out.best])
    probabilities = out.probabilities()
    assert probabilities.shape == (2, 1, S, S) and probabilities.min() >= 0 and probabilities.max() <= 1
    assert out.confidence().shape == (2,)
    assert out.prompts.point_coords.shape == (2, 3, 2) and out.prompts.boxes.shape == (2, 4)


def test_gradients_reach_every_trainable_part(restore_assistant: TemplateAssistant):
    model = restore_assistant.train()
    model.zero_grad(set_to_none=True)
    target, templates, masks = episode(batch=1, count=1)
    out = model(target, templates, masks, ["spleen"])
    truth = torch.zeros(1, 1, S, S)
    truth[..., 90:150, 70:130] = 1
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.best_logits(), truth)
    loss = loss + out.iou.mean() + out.object_score_logits.mean()
    loss.backward()

    def grad_norm(params) -> float:
        return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)

    groups = model.parameter_groups()
    for name in ("encoder", "memory", "decoder", "new"):
        assert grad_norm(groups[name]) > 0, name
    assert grad_norm(model.prototype_proj.parameters()) > 0
    assert grad_norm(model.text_proj.parameters()) > 0
    assert grad_norm(model.sam.memory_attention.parameters()) > 0
    assert grad_norm(model.sam.sam_mask_decoder.parameters()) > 0


def test_parameter_groups_are_disjoint_and_trainable(assistant: TemplateAssistant):
    groups = assistant.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    assert all(p.requires_grad for params in groups.values() for p in params)
    assert {id(p) for p in assistant.text_proj.parameters()} <= set(ids)


def test_text_token_is_used_once_trained(restore_assistant: TemplateAssistant, encoded):
    model = restore_assistant.eval()
    with torch.no_grad():
        untrained = [model.decode(*encoded, model.embed_text([t])).logits for t in ("liver", "spleen")]
        assert torch.equal(*untrained)  # zero-initialised projection: text has no effect yet
        torch.nn.init.normal_(model.text_proj.weight, std=0.5)
        trained = [model.decode(*encoded, model.embed_text([t])).logits for t in ("liver", "spleen")]
    assert not torch.allclose(*trained)


def test_mask_prompt_and_extra_points_change_the_output(assistant: TemplateAssistant, encoded):
    model = assistant.eval()
    text = model.embed_text(["liver"])
    prompt = torch.full((1, 1, S, S), -10.0)
    prompt[..., :64, :64] = 10.0
    points = (torch.tensor([[[200.0, 30.0]]]), torch.tensor([[1]]))
    with torch.no_grad():
        plain = model.decode(*encoded, text)
        masked = model.decode(*encoded, text, mask_prompt=prompt)
        clicked = model.decode(*encoded, text, extra_points=points)
    assert not torch.allclose(plain.logits, masked.logits)
    assert not torch.allclose(plain.logits, clicked.logits)


def test_templates_condition_the_target(assistant: TemplateAssistant, encoded):
    model = assistant.eval()
    features, memory = encoded
    moved = torch.zeros(1, 1, S, S)
    moved[..., 10:60, 180:240] = 1.0
    template_features = ImageFeatures(
        torch.zeros(1, 32, S // 4, S // 4), torch.zeros(1, 64, S // 8, S // 8), memory.embedding[0], features.pos
    )
    with torch.no_grad():
        other = model.encode_templates(template_features, moved)
        a = model.condition(features, memory)
        b = model.condition(features, other.gather(torch.zeros(1, 1, dtype=torch.long)))
    assert memory.memory.shape == (1, 1, 64, S // 16, S // 16) and memory.memory_pos.shape == (1, 64, S // 16, S // 16)
    assert [p.shape for p in memory.prototypes] == [(1, 1, 2, 64), (1, 1, 2, 32)]  # s1, s0: foreground, background
    assert a.shape == (1, 256, S // 16, S // 16)
    assert not torch.allclose(a, b)  # the memory attention reads the template masks


def test_predict_matches_eval_forward_without_autograd(assistant: TemplateAssistant):
    model = assistant.eval()
    inputs = episode(batch=1, count=1)
    with torch.no_grad():
        reference = model(*inputs, ["aorta"])
    predicted = model.predict(*inputs, ["aorta"], precision="float32")
    assert not predicted.logits.requires_grad and predicted.logits.is_inference()
    torch.testing.assert_close(predicted.logits, reference.logits)
    bf16 = model.predict(*inputs, ["aorta"], precision="bfloat16")
    assert bf16.logits.dtype == torch.float32  # the decoder's output is cast back
    torch.testing.assert_close(bf16.logits, reference.logits, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t, tm, m, txt: (t[:, :, :128], tm, m, txt), "target_images"),
        (lambda t, tm, m, txt: (t, tm, m[:, :1], txt), "templates"),
        (lambda t, tm, m, txt: (t, tm, m, txt[:1]), "texts"),
    ],
)
def test_bad_shapes_are_rejected(assistant: TemplateAssistant, change, message):
    args = change(*episode(), ["liver", "spleen"])
    with pytest.raises(ValueError, match=message):
        assistant(*args)

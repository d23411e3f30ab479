"""ModelConfig: dict round trip, variant names, bad values."""

from __future__ import annotations

import pytest

from vessa.model.config import SAM2_CONFIGS, MatchingConfig, ModelConfig, TextConfig


def test_round_trip_keeps_every_field():
    config = ModelConfig(
        sam2_config="small",
        image_size=256,
        text=TextConfig(kind="open_clip", model="ViT-B-32", pretrained="/w.bin"),
        matching=MatchingConfig(top_k=3, n_pos=1, n_neg=0, nms_radius=2, box_threshold=0.4, mask_logit_scale=8.0,
                                fine_levels=["s0"]),
        max_templates=2,
    )
    data = config.to_dict()
    assert data["sam2_config"] == SAM2_CONFIGS["small"]
    assert data["text"] == {"kind": "open_clip", "model": "ViT-B-32", "pretrained": "/w.bin"}
    assert ModelConfig.from_dict(data) == config


def test_defaults_are_hiera_tiny_at_512_with_minilm():
    config = ModelConfig()
    assert config.sam2_config == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert config.image_size == 512 and config.text.kind == "minilm"
    assert (config.matching.top_k, config.matching.n_pos, config.matching.n_neg) == (5, 2, 1)
    assert config.matching.fine_levels == ["s1", "s0"]


def test_configs_saved_before_fine_levels_load_as_embedding_only_matching():
    data = ModelConfig().to_dict()
    del data["matching"]["fine_levels"]
    assert ModelConfig.from_dict(data).matching.fine_levels == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image_size": 300}, "image_size"),
        ({"sam2_config": "huge"}, "sam2_config"),
        ({"colour": 1}, "unknown keys"),
        ({"text": {"kind": "bert"}}, "text.kind"),
        ({"text": {"kind": "open_clip"}}, "text.model"),
        ({"matching": {"top_k": 0}}, "matching.top_k"),
        ({"matching": {"box_threshold": 1.5}}, "box_threshold"),
        ({"matching": {"radius": 3}}, "unknown keys"),
        ({"matching": {"fine_levels": ["s2"]}}, "matching.fine_levels"),
        ({"matching": {"fine_levels": ["s0", "s0"]}}, "matching.fine_levels"),
        ({"max_templates": 0}, "max_templates"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(data)

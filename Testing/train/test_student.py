"""The stage-2 student: MONAI UNet with exposed encoder features and channel masks."""

import pytest
import torch
from monai.networks.nets import UNet

from vessa.errors import CheckpointError
from vessa.train.student import StudentConfig, StudentUNet

TINY = (4, 8, 16)


def tiny_student(classes=3):
    torch.manual_seed(0)
    return StudentUNet(StudentConfig(class_names=[f"c{i}" for i in range(classes)], channels=TINY, strides=(2, 2),
                                     res_units=1, image_size=32))


def test_student_is_monai_unet_with_encoder_features():
    student = tiny_student().eval()
    reference = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=TINY, strides=(2, 2),
                     num_res_units=1).eval()
    reference.load_state_dict(student.state_dict())  # same modules, same keys: the supervised method's net
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(student(x), reference(x), atol=1e-6)
    logits, features = student(x, return_features=True)
    assert torch.equal(logits, student(x))
    assert [f.shape[1:] for f in features] == [(4, 16, 16), (8, 8, 8), (16, 8, 8)]
    assert student.encoder_channels == TINY
    assert student._features is None and student._mask is None  # nothing left behind


def test_channel_mask_scales_encoder_features_per_sample():
    student = tiny_student().eval()
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(student(x, torch.ones(2, 16)), student(x), atol=1e-6)
    mask = torch.ones(2, 16)
    mask[0, :2] = 0  # sample 0 loses its first two channels on every level
    out, features = student(x, mask, return_features=True)
    assert torch.allclose(out[1], student(x)[1], atol=1e-6)
    assert not torch.allclose(out[0], student(x)[0], atol=1e-4)
    for f in features:
        assert (f[0, :2] == 0).all() and (f[1, :2] != 0).any()
    doubled, _ = student(x, torch.full((2, 16), 2.0), return_features=True)
    assert not torch.allclose(doubled, student(x), atol=1e-4)


def test_config_round_trip_and_validation():
    config = StudentConfig(class_names=["background", "liver"], channels=list(TINY), strides=[2, 2], image_size=64)
    assert StudentConfig.from_dict(config.to_dict()) == config
    assert config.num_classes == 2
    with pytest.raises(CheckpointError, match=">= 2 positive widths"):
        StudentConfig(channels=(4,), strides=())
    with pytest.raises(CheckpointError, match="expected 2 positive"):
        StudentConfig(channels=(4, 8, 16), strides=(2,))
    with pytest.raises(CheckpointError, match="multiple of 8"):
        StudentConfig(image_size=36)
    with pytest.raises(CheckpointError, match="unknown keys"):
        StudentConfig.from_dict({"depth": 3})

"""The stage-2 student: BasicUNet with exposed encoder features and channel masks."""

import pytest
import torch
from monai.networks.nets import BasicUNet

from vessa.errors import CheckpointError
from vessa.train.student import StudentConfig, StudentUNet

TINY = (4, 4, 8, 8, 16, 4)


def tiny_student(classes=3):
    torch.manual_seed(0)
    return StudentUNet(StudentConfig(class_names=[f"c{i}" for i in range(classes)], features=TINY, image_size=32))


def test_student_is_basic_unet_with_split_forward():
    student = tiny_student().eval()
    reference = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=TINY, norm="batch").eval()
    reference.load_state_dict(student.state_dict())  # same modules, same keys
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(student(x), reference(x), atol=1e-6)
    features = student.encode(x)
    assert [f.shape[1:] for f in features] == [(4, 32, 32), (4, 16, 16), (8, 8, 8), (8, 4, 4), (16, 2, 2)]
    assert student.encoder_channels == (4, 4, 8, 8, 16)
    logits, returned = student(x, return_features=True)
    assert torch.equal(logits, student(x)) and all(torch.equal(a, b) for a, b in zip(returned, features, strict=True))


def test_channel_mask_scales_encoder_features_per_sample():
    student = tiny_student().eval()
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(student(x, torch.ones(2, 16)), student(x), atol=1e-6)
    zero_first = torch.ones(2, 16)
    zero_first[0] = 0  # sample 0 loses every encoder feature, sample 1 keeps them
    out = student(x, zero_first)
    assert torch.allclose(out[1], student(x)[1], atol=1e-6)
    assert not torch.allclose(out[0], student(x)[0], atol=1e-3)
    assert torch.allclose(out[0], student.decode([torch.zeros_like(f[:1]) for f in student.encode(x)])[0], atol=1e-6)


def test_config_round_trip_and_validation():
    config = StudentConfig(class_names=["background", "liver"], features=list(TINY), image_size=64)
    assert StudentConfig.from_dict(config.to_dict()) == config
    assert config.num_classes == 2
    with pytest.raises(CheckpointError, match="6 positive widths"):
        StudentConfig(features=(4, 4))
    with pytest.raises(CheckpointError, match="multiple of 16"):
        StudentConfig(image_size=30)
    with pytest.raises(CheckpointError, match="unknown keys"):
        StudentConfig.from_dict({"depth": 3})

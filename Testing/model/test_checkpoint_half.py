"""Half-precision checkpoints (how the starter ships) load back into a float32 model."""

import torch

from vessa.model.assistant import TemplateAssistant
from vessa.model.checkpoint import load_assistant, read_checkpoint, save_checkpoint
from vessa.model.config import ModelConfig


def test_float16_checkpoint_loads_as_float32_with_the_same_values(tmp_path):
    torch.manual_seed(0)
    assistant = TemplateAssistant(ModelConfig(sam2_config="half_tiny", image_size=128))
    path = save_checkpoint(assistant, tmp_path / "half.pt", {"note": "test"}, dtype=torch.float16)
    stored = read_checkpoint(path)["state_dict"]
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    loaded = load_assistant(path)
    original = assistant.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == original[key].dtype
        torch.testing.assert_close(value, original[key].to(torch.float16).to(value.dtype))
    assert path.stat().st_size < 40e6

"""`vessa text-table` through the real command line entry point."""

import torch

from vessa.cli import main
from vessa.io import Segmentation, Volume, write_segmentation
from vessa.model.config import TextConfig
from vessa.model.text import TextEncoder


def test_text_table_embeds_arguments_and_segment_names(tmp_path, capsys):
    segmentation = Segmentation.on_grid(Volume(torch.zeros(3, 8, 8).numpy()))
    segmentation.add("left caudate", torch.ones(3, 8, 8).bool().numpy())
    seg = write_segmentation(segmentation, tmp_path / "case.seg.nrrd")
    out = tmp_path / "names.pt"
    assert main(["text-table", "liver", "--segmentation", str(seg), "--out", str(out)]) == 0
    assert "wrote 2 embeddings" in capsys.readouterr().out
    table = torch.load(out, weights_only=True)
    assert table["texts"] == ["left caudate", "liver"]
    assert torch.equal(table["embeddings"], TextEncoder(TextConfig()).encode(["left caudate", "liver"]))


def test_text_table_needs_something_to_embed(tmp_path, capsys):
    assert main(["text-table", "--out", str(tmp_path / "names.pt")]) == 2
    assert "nothing to embed" in capsys.readouterr().err

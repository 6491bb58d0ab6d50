"""What a quantization backend offers accuracy-aware int8: its quantizable ops, an artifact with any
set of them left in float, and a host runner for it.

A backend is per target kind: TFLite (and the Edge TPU's int8 model, for analysis) selectively
quantizes the calibrated model with deny-listed nodes; TensorRT leaves the Q/DQ pairs out around
the chosen ONNX nodes. Each backend lives in its target kind's package (``accuracy`` module) and a
:class:`~edgec.targets.base.Target` hands it out; accuracy control (:mod:`edgec.accuracy`) only sees
this interface.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass
class QuantOp:
    """One op of the int8 artifact that can be left in float.

    Attributes:
        id: what the backend deny-lists: the TFLite op's output tensor name in the calibrated model,
            or the ONNX node name.
        index: the op's position in graph order (TFLite operator index; ONNX node index).
        op: the op type as the format spells it (``CONV_2D``, ``Conv``).
        layers: the Keras layers the op came from (several when the converter fused them).
        params: parameters (weights and biases) the op holds.
        macs: multiply-accumulates per sample (Conv, depthwise Conv, fully connected / Gemm / MatMul).
        weight_scale: (min, max) of the weight quantization scales (one per output channel).
        weight_channels: how many weight scales there are.
        input_scale: quantization step of the op's (first) activation input.
        output_scale: quantization step of the op's output.
    """

    id: str
    index: int
    op: str
    layers: list[str]
    params: int = 0
    macs: int = 0
    weight_scale: tuple[float, float] | None = None
    weight_channels: int = 0
    input_scale: float | None = None
    output_scale: float | None = None

    @property
    def layer(self) -> str:
        """The Keras layer(s): ``conv2d`` or ``conv2d+batch_normalization`` (fused by the converter)."""
        return "+".join(self.layers) if self.layers else "-"

    @property
    def short_layer(self) -> str:
        """The first Keras layer, and how many more were fused into the op: ``conv2d +2``."""
        if not self.layers:
            return "-"
        return self.layers[0] + (f" +{len(self.layers) - 1}" if len(self.layers) > 1 else "")

    def describe(self) -> dict[str, Any]:
        out = {"id": self.id, "index": self.index, "op": self.op, "layer": self.layer, "short_layer": self.short_layer,
               "layers": list(self.layers),
               "params": self.params, "macs": self.macs, "input_scale": _round(self.input_scale),
               "output_scale": _round(self.output_scale), "weight_scale": None}
        if self.weight_scale is not None:
            out["weight_scale"] = {"min": _round(self.weight_scale[0]), "max": _round(self.weight_scale[1]),
                                   "channels": self.weight_channels}
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A set of ops the search may leave in float together.

    ``kind`` is "op" (one op), "tensor": an activation tensor's producer and all its consumers,
    the smallest set that keeps that tensor in float where the format puts the quantization in the
    producer's output (TFLite: an int8 op writes int8, so a float op between int8 neighbours still
    reads and writes the same int8 tensors), or "set": a whole set of ops measured together by the
    search for the fewest float MACs.
    """

    ops: tuple[str, ...]
    kind: str = "op"
    label: str = ""


class Backend(Protocol):
    """A target kind's int8 quantization, with any set of ops left in float."""

    kind: str
    ops: list[QuantOp]  # the quantizable ops, in graph order
    #: whether the artifact's latency on this host says what a float op costs on the device (LiteRT
    #: on a CPU, as the device runs it); a GPU engine's latency belongs to the device
    host_latency: bool

    def candidates(self) -> list[Candidate]:
        """What the search ranks and reverts: every op, and tensor groups where they matter."""

    def build(self, float_ops: Iterable[str]) -> Any:
        """The int8 artifact with these ops (ids) left in float."""

    def run(self, artifact: Any, x: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        """The artifact's float outputs on ``x`` and their names, in the artifact's order."""

    def size(self, artifact: Any) -> int:
        """The artifact's size in bytes."""

    def layer_stats(self, x: np.ndarray) -> dict[str, dict[str, float | None]]:
        """Per-op quantization error of the plain int8 model on ``x``, each op fed the same input
        in float and int8: id -> ``rmse_steps`` (RMSE of its output / its output's quantization
        step) and ``sqnr_db``."""


def layers_named(names: Iterable[str], layer_names: Sequence[str]) -> list[str]:
    """The Keras layers whose names appear as a path component of any of ``names`` (converter
    tensor and node names: ``model/conv2d/BiasAdd;model/batch_normalization/FusedBatchNormV3``),
    in the model's layer order."""
    known = set(layer_names)
    found: set[str] = set()
    for name in names:
        for piece in re.split(r"[;,]", name):
            # model/layer/TFOp...: the leftmost layer name is the layer (a TF op may share a layer's name)
            hit = next((c for c in (p.split(":")[0] for p in piece.split("/")) if c in known), None)
            if hit is not None:
                found.add(hit)
    return [n for n in layer_names if n in found]


def sqnr_db(signal: float, noise: float) -> float | None:
    """10 log10(signal / noise); ``None`` when either is zero (exact, or no signal)."""
    if noise <= 0 or signal <= 0:
        return None
    return round(10.0 * float(np.log10(signal / noise)), 3)

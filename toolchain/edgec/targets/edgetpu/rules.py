"""Edge TPU rules: the op table, the per-op limit checks and MAC counts, and a profile's settings.

The table (``targets/edgetpu_ops.json`` at the top of the repository, transcribed from Coral's
published model requirements and supported operations) says which ops the Edge TPU runs, since
which runtime version, and which limits apply; the checks here evaluate those limits on one op
of a TFLite model.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.resources import data_file
from edgec.targets.schema import Profile, Spec, one_of, positive

RULES_FILE = data_file("targets", "edgetpu_ops.json")
#: categories of a CPU placement; the compiler's own status lines map onto the same words
CATEGORIES = ("mapped", "unsupported_op", "runtime_version", "op_version", "dtype", "dynamic_shape",
              "rank", "non_constant_parameters", "tensor_too_large", "op_constraint", "after_cpu_op",
              "unspecified", "other")



# --------------------------------------------------------------------------------------------
# rule table


@lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    """The Edge TPU rule table (``edgetpu_ops.json``), checked against the known constraints.

    Raises:
        EdgecError: the table is missing or names a check edgec does not implement.
    """
    try:
        table = json.loads(RULES_FILE.read_text())
    except (OSError, ValueError) as exc:
        raise EdgecError(f"cannot read the Edge TPU rule table '{RULES_FILE}': {exc}") from exc
    for op, entry in table["ops"].items():
        for limit in entry.get("limits", []):
            unknown = [c for c in limit.get("checks", []) if c not in CHECKS]
            if unknown:
                raise EdgecError(f"{RULES_FILE}: op {op} names unknown checks {unknown}; known: {sorted(CHECKS)}")
        if entry.get("macs") and entry["macs"] not in MAC_RULES:
            raise EdgecError(f"{RULES_FILE}: op {op} has unknown MAC rule '{entry['macs']}'")
    return table


#: the ``[edgetpu]`` table of an Edge TPU profile
SECTION: Spec = {
    "variant": (str, True, one_of(("usb", "pci", "devboard", "m2", "dual-m2", "som"))),
    "num_tpus": (int, False, positive),
    "min_runtime_version": (int, False, positive),
    "cache_mb": ((int, float), False, positive),
    "clock": (str, False, one_of(("std", "max"))),
    "compile_timeout_s": (int, False, positive),
}


@dataclasses.dataclass(frozen=True)
class EdgeTPUSettings:
    """The Edge TPU knobs of a profile (``[edgetpu]`` table) with the rule table's defaults."""

    min_runtime_version: int = 14
    cache_mb: float = 8.0
    num_tpus: int = 1
    compile_timeout_s: int = 180
    variant: str | None = None

    @classmethod
    def from_profile(cls, profile: Profile | None) -> EdgeTPUSettings:
        table = rules()
        section = dict(profile.section("edgetpu") or {}) if profile is not None else {}
        return cls(
            min_runtime_version=int(section.get("min_runtime_version", table["default_min_runtime_version"])),
            cache_mb=float(section.get("cache_mb", table["default_cache_mb"])),
            num_tpus=int(section.get("num_tpus", 1)),
            compile_timeout_s=int(section.get("compile_timeout_s", 180)),
            variant=section.get("variant"),
        )

    @property
    def num_segments(self) -> int:
        """Pipeline segments the compiler splits the model into (one per Edge TPU)."""
        return max(1, self.num_tpus)

    @property
    def cache_bytes(self) -> int:
        """On-chip parameter cache over all Edge TPUs the model is segmented across."""
        return int(self.cache_mb * 2**20) * self.num_segments


# --------------------------------------------------------------------------------------------
# analysis


@dataclasses.dataclass
class Op:
    """What the checks see of one operator."""

    index: int
    name: str
    version: int
    options: Any  # the schema's builtin options object (None when the op has none)
    inputs: list  # tflite_model.Tensor or None for omitted optional inputs
    outputs: list
    settings: EdgeTPUSettings


def _axes(t, rank: int) -> list[int] | None:
    """Constant axis tensor -> normalized axes (None when not constant)."""
    if t is None or t.data is None:
        return None
    return sorted({int(a) % rank for a in np.asarray(t.data).reshape(-1)}) if rank else []


def non_unit_dims(shape) -> int:
    return sum(1 for d in shape if d != 1)


def _fused_activation(op: Op) -> str | None:
    code = getattr(op.options, "fusedActivationFunction", 0) or 0
    if code == 0:
        return None
    from edgec.tflite_model import schema_module

    names = {v: k for k, v in vars(schema_module().ActivationFunctionType).items() if not k.startswith("_")}
    return names.get(code, str(code))


def _check_no_fused_activation(op: Op):
    act = _fused_activation(op)
    return ("op_constraint", f"has a fused {act} activation; the Edge TPU maps {op.name} only without one") if act else None


def _dilation(op: Op) -> tuple[int, int]:
    return int(getattr(op.options, "dilationHFactor", 1) or 1), int(getattr(op.options, "dilationWFactor", 1) or 1)


def _check_same_dilation(op: Op):
    h, w = _dilation(op)
    return ("op_constraint", f"dilation {h}x{w} differs between y and x") if h != w else None


def _check_no_dilation(op: Op):
    h, w = _dilation(op)
    if (h, w) != (1, 1):
        return ("runtime_version", f"dilation {h}x{w} needs Edge TPU runtime 13+ "
                                   f"(min_runtime_version is {op.settings.min_runtime_version})")
    return None


def _check_concat_constant(op: Op):
    consts = [t for t in op.inputs if t is not None and t.is_constant]
    if not consts:
        return None
    if len(op.inputs) != 2:
        return ("op_constraint", f"concatenates a constant tensor with {len(op.inputs) - 1} other inputs; "
                                 "only a 2-input zero padding is supported")
    const = consts[0]
    zero = const.zero_point[0] if const.zero_point else 0
    if not np.all(np.asarray(const.data) == zero):
        return ("op_constraint", f"constant input '{const.name}' is not all zeros (only zero padding is supported)")
    return None


def _check_fc_weights_format(op: Op):
    fmt = getattr(op.options, "weightsFormat", 0) or 0
    return ("op_constraint", f"uses a non-default fully-connected weights format ({fmt})") if fmt else None


def _check_output_one_dimensional(op: Op):
    out = op.outputs[0] if op.outputs else None
    if out is not None and non_unit_dims(out.shape) > 1:
        return ("op_constraint", f"output shape {list(out.shape)} is not one-dimensional")
    return None


def _reduce_axes(op: Op) -> tuple[list[int] | None, int]:
    x = op.inputs[0]
    rank = len(x.shape)
    return _axes(op.inputs[1] if len(op.inputs) > 1 else None, rank), rank


def _check_reduce_not_batch(op: Op):
    axes, rank = _reduce_axes(op)
    if axes is None:
        return ("non_constant_parameters", "reduction axes are not constant at compile time")
    if rank >= 4 and 0 in axes:
        return ("op_constraint", f"reduces over the batch dimension (axes {axes})")
    return None


def _check_reduce_xy_only(op: Op):
    axes, rank = _reduce_axes(op)
    allowed = {rank - 3, rank - 2} if rank >= 3 else set()
    if axes is not None and not set(axes) <= allowed:
        return ("runtime_version", f"reduces over axes {axes}; runtime <= 12 supports only x/y reductions "
                                   f"(min_runtime_version is {op.settings.min_runtime_version})")
    return None


def _check_reduce_z_multiple_of_4(op: Op):
    axes, rank = _reduce_axes(op)
    x = op.inputs[0]
    if axes is not None and rank and (rank - 1) in axes and rank >= 3 and x.shape[-1] % 4:
        return ("op_constraint", f"reduces over z with depth {x.shape[-1]}, which is not a multiple of 4")
    return None


def _check_pack_not_batch(op: Op):
    axis = int(getattr(op.options, "axis", 0) or 0)
    rank = len(op.outputs[0].shape) if op.outputs else 0
    if rank and axis % rank == 0:
        return ("op_constraint", "packs along the batch dimension")
    return None


def _paddings(op: Op):
    p = op.inputs[1] if len(op.inputs) > 1 else None
    return None if p is None or p.data is None else np.asarray(p.data).reshape(-1, 2)


def _check_pad_not_batch(op: Op):
    pads = _paddings(op)
    if pads is None:
        return ("non_constant_parameters", "paddings are not constant at compile time")
    if len(pads) >= 4 and np.any(pads[0] != 0):
        return ("op_constraint", f"pads the batch dimension by {pads[0].tolist()}")
    return None


def _check_pad_xy_only(op: Op):
    pads = _paddings(op)
    if pads is None:
        return ("non_constant_parameters", "paddings are not constant at compile time")
    rank = len(pads)
    padded = [i for i in range(rank) if np.any(pads[i] != 0)]
    if rank >= 3 and not set(padded) <= {rank - 3, rank - 2}:
        return ("runtime_version", f"pads axes {padded}; runtime <= 12 supports only x/y padding "
                                   f"(min_runtime_version is {op.settings.min_runtime_version})")
    return None


def _check_prelu_alpha(op: Op):
    alpha = op.inputs[1] if len(op.inputs) > 1 else None
    if alpha is not None and non_unit_dims(alpha.shape[:-1]) > 0:
        return ("op_constraint", f"alpha shape {list(alpha.shape)} is not 1-dimensional "
                                 "(Keras PReLU needs shared_axes=[1, 2])")
    return None


def _check_three_dimensional_io(op: Op):
    for t in [*op.inputs[:1], *op.outputs[:1]]:
        if t is not None and len(t.shape) == 4 and t.shape[0] != 1:
            return ("op_constraint", f"tensor {list(t.shape)} is not 3-dimensional (batch > 1)")
    return None


def _check_softmax(op: Op):
    x = op.inputs[0]
    if non_unit_dims(x.shape) > 1:
        return ("op_constraint", f"input shape {list(x.shape)} is not 1-D")
    size = int(np.prod(x.shape)) if x.shape else 1
    if size > 16000:
        return ("tensor_too_large", f"input has {size:,} elements; the Edge TPU softmax takes at most 16,000")
    return None


def _check_split_not_batch(op: Op):
    axis_t, x = op.inputs[0], op.inputs[1] if len(op.inputs) > 1 else None
    if x is None:
        return None
    axes = _axes(axis_t, len(x.shape))
    if axes is None:
        return ("non_constant_parameters", "split axis is not constant at compile time")
    if len(x.shape) >= 4 and 0 in axes:
        return ("op_constraint", "splits along the batch dimension")
    return None


def _check_squeeze_leading_ones(op: Op):
    x = op.inputs[0]
    dims = list(getattr(op.options, "squeezeDims", None) or [])
    rank = len(x.shape)
    squeezed = sorted(d % rank for d in dims) if dims else [i for i, d in enumerate(x.shape) if d == 1]
    leading = 0
    while leading < rank and x.shape[leading] == 1:
        leading += 1
    if any(d >= leading for d in squeezed):
        return ("runtime_version", f"squeezes non-leading dimensions of {list(x.shape)}; runtime <= 12 needs "
                                   f"leading 1s only (min_runtime_version is {op.settings.min_runtime_version})")
    return None


def _check_strided_slice(op: Op):
    strides = op.inputs[3] if len(op.inputs) > 3 else None
    if strides is None or strides.data is None:
        return ("non_constant_parameters", "strides are not constant at compile time")
    if np.any(np.asarray(strides.data) != 1):
        return ("op_constraint", f"strides {np.asarray(strides.data).tolist()} are not all 1")
    if getattr(op.options, "ellipsisMask", 0) or getattr(op.options, "newAxisMask", 0):
        return ("op_constraint", "uses an ellipsis or new-axis mask")
    return None


def _check_transpose_not_batch(op: Op):
    perm = op.inputs[1] if len(op.inputs) > 1 else None
    if perm is None or perm.data is None:
        return ("non_constant_parameters", "permutation is not constant at compile time")
    p = np.asarray(perm.data).reshape(-1)
    if len(p) >= 4 and int(p[0]) != 0:
        return ("op_constraint", f"permutation {p.tolist()} moves the batch dimension")
    return None


CHECKS = {
    "no_fused_activation": _check_no_fused_activation,
    "same_dilation": _check_same_dilation,
    "no_dilation": _check_no_dilation,
    "concat_constant_is_zero_pad": _check_concat_constant,
    "fc_default_weights_format": _check_fc_weights_format,
    "output_one_dimensional": _check_output_one_dimensional,
    "reduce_not_batch": _check_reduce_not_batch,
    "reduce_xy_only": _check_reduce_xy_only,
    "reduce_z_multiple_of_4": _check_reduce_z_multiple_of_4,
    "pack_not_batch": _check_pack_not_batch,
    "pad_not_batch": _check_pad_not_batch,
    "pad_xy_only": _check_pad_xy_only,
    "prelu_alpha_innermost": _check_prelu_alpha,
    "three_dimensional_io": _check_three_dimensional_io,
    "softmax_1d_max_16000": _check_softmax,
    "split_not_batch": _check_split_not_batch,
    "squeeze_leading_ones": _check_squeeze_leading_ones,
    "strided_slice_unit_strides": _check_strided_slice,
    "transpose_not_batch": _check_transpose_not_batch,
}


def _prod(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _macs_conv(op: Op) -> int:  # kernel [out_ch, kh, kw, in_ch]: per output element kh*kw*in_ch
    w = op.inputs[1]
    return _prod(op.outputs[0].shape) * _prod(w.shape[1:])


def _macs_depthwise(op: Op) -> int:  # kernel [1, kh, kw, out_ch]: per output element kh*kw
    w = op.inputs[1]
    return _prod(op.outputs[0].shape) * _prod(w.shape[1:3])


def _macs_fully_connected(op: Op) -> int:  # weights [units, in]: per output element `in`
    w = op.inputs[1]
    return _prod(op.outputs[0].shape) * int(w.shape[-1])


def _macs_transpose_conv(op: Op) -> int:  # weights [out_ch, kh, kw, in_ch]; input [1, h, w, in_ch]
    w, x = op.inputs[1], op.inputs[2]
    return _prod(x.shape) * int(w.shape[0]) * _prod(w.shape[1:3])


MAC_RULES = {"conv": _macs_conv, "depthwise": _macs_depthwise, "fully_connected": _macs_fully_connected,
              "transpose_conv": _macs_transpose_conv}



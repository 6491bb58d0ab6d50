"""Edge TPU target: a full-integer TFLite model, an op-by-op Edge TPU map, and the compiler.

The build reuses the TFLite target's int8 conversion with a static batch of 1, then reads the
artifact itself to decide, op by op, whether the Edge TPU can run it (rules in
``edgetpu_ops.json`` beside this module, transcribed from Coral's published requirements).
When ``edgetpu_compiler`` is on PATH of an x86-64 host it is run with the profile's options;
its log is kept, parsed into the same per-op structure, and compared with the analysis. When it
is not, the EdgeTPU-ready ``model_int8.tflite`` is the artifact and the manifest gives the exact
command that finishes the compile.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgec.config import BuildOptions, Precision
from edgec.errors import CheckFailed, EdgecError
from edgec.profiles import Profile
from edgec.targets.base import Artifact, BuildContext, Target

log = logging.getLogger(__name__)

RULES_FILE = Path(__file__).with_name("edgetpu_ops.json")
INT8_MODEL = "model_int8.tflite"
REPORT_FILE = "edgetpu_report.json"
COMPILER_STDOUT = "edgetpu_compiler.log"
#: seconds granted beyond the compiler's own ``-t`` timer before edgec kills it
TIMEOUT_MARGIN_S = 60

#: categories of a CPU placement; the compiler's own status lines map onto the same words
CATEGORIES = ("mapped", "unsupported_op", "runtime_version", "op_version", "dtype", "dynamic_shape",
              "rank", "non_constant_parameters", "tensor_too_large", "op_constraint", "after_cpu_op",
              "unspecified", "other")

#: edgetpu_compiler status text -> category (the compiler's wording, see tests/edgetpu/fixtures)
COMPILER_STATUS = {
    "Mapped to Edge TPU": "mapped",
    "Operation not supported": "unsupported_op",
    "Operation is working on an unsupported data type": "dtype",
    "Operation version not supported": "op_version",
    "More than one subgraph is not supported": "after_cpu_op",
    "Tensor has unsupported rank (up to 3 innermost dimensions mapped)": "rank",
    "Operation is otherwise supported, but not mapped due to some unspecified limitation": "unspecified",
    "Only Strided-Slice with unitary strides supported": "op_constraint",
}


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
            unknown = [c for c in limit.get("checks", []) if c not in _CHECKS]
            if unknown:
                raise EdgecError(f"{RULES_FILE}: op {op} names unknown checks {unknown}; known: {sorted(_CHECKS)}")
        if entry.get("macs") and entry["macs"] not in _MAC_RULES:
            raise EdgecError(f"{RULES_FILE}: op {op} has unknown MAC rule '{entry['macs']}'")
    return table


@dataclasses.dataclass(frozen=True)
class Settings:
    """The Edge TPU knobs of a profile (``[edgetpu]`` table) with the rule table's defaults."""

    min_runtime_version: int = 14
    cache_mb: float = 8.0
    num_tpus: int = 1
    compile_timeout_s: int = 180
    variant: str | None = None

    @classmethod
    def from_profile(cls, profile: Profile | None) -> Settings:
        table = rules()
        section = dict(profile.edgetpu or {}) if profile is not None else {}
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
class _Op:
    """What the checks see of one operator."""

    index: int
    name: str
    version: int
    options: Any  # the schema's builtin options object (None when the op has none)
    inputs: list  # tflite_model.Tensor or None for omitted optional inputs
    outputs: list
    settings: Settings


def _axes(t, rank: int) -> list[int] | None:
    """Constant axis tensor -> normalized axes (None when not constant)."""
    if t is None or t.data is None:
        return None
    return sorted({int(a) % rank for a in np.asarray(t.data).reshape(-1)}) if rank else []


def _non_unit_dims(shape) -> int:
    return sum(1 for d in shape if d != 1)


def _fused_activation(op: _Op) -> str | None:
    code = getattr(op.options, "fusedActivationFunction", 0) or 0
    if code == 0:
        return None
    from edgec.tflite_model import _schema

    names = {v: k for k, v in vars(_schema().ActivationFunctionType).items() if not k.startswith("_")}
    return names.get(code, str(code))


def _check_no_fused_activation(op: _Op):
    act = _fused_activation(op)
    return ("op_constraint", f"has a fused {act} activation; the Edge TPU maps {op.name} only without one") if act else None


def _dilation(op: _Op) -> tuple[int, int]:
    return int(getattr(op.options, "dilationHFactor", 1) or 1), int(getattr(op.options, "dilationWFactor", 1) or 1)


def _check_same_dilation(op: _Op):
    h, w = _dilation(op)
    return ("op_constraint", f"dilation {h}x{w} differs between y and x") if h != w else None


def _check_no_dilation(op: _Op):
    h, w = _dilation(op)
    if (h, w) != (1, 1):
        return ("runtime_version", f"dilation {h}x{w} needs Edge TPU runtime 13+ "
                                   f"(min_runtime_version is {op.settings.min_runtime_version})")
    return None


def _check_concat_constant(op: _Op):
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


def _check_fc_weights_format(op: _Op):
    fmt = getattr(op.options, "weightsFormat", 0) or 0
    return ("op_constraint", f"uses a non-default fully-connected weights format ({fmt})") if fmt else None


def _check_output_one_dimensional(op: _Op):
    out = op.outputs[0] if op.outputs else None
    if out is not None and _non_unit_dims(out.shape) > 1:
        return ("op_constraint", f"output shape {list(out.shape)} is not one-dimensional")
    return None


def _reduce_axes(op: _Op) -> tuple[list[int] | None, int]:
    x = op.inputs[0]
    rank = len(x.shape)
    return _axes(op.inputs[1] if len(op.inputs) > 1 else None, rank), rank


def _check_reduce_not_batch(op: _Op):
    axes, rank = _reduce_axes(op)
    if axes is None:
        return ("non_constant_parameters", "reduction axes are not constant at compile time")
    if rank >= 4 and 0 in axes:
        return ("op_constraint", f"reduces over the batch dimension (axes {axes})")
    return None


def _check_reduce_xy_only(op: _Op):
    axes, rank = _reduce_axes(op)
    allowed = {rank - 3, rank - 2} if rank >= 3 else set()
    if axes is not None and not set(axes) <= allowed:
        return ("runtime_version", f"reduces over axes {axes}; runtime <= 12 supports only x/y reductions "
                                   f"(min_runtime_version is {op.settings.min_runtime_version})")
    return None


def _check_reduce_z_multiple_of_4(op: _Op):
    axes, rank = _reduce_axes(op)
    x = op.inputs[0]
    if axes is not None and rank and (rank - 1) in axes and rank >= 3 and x.shape[-1] % 4:
        return ("op_constraint", f"reduces over z with depth {x.shape[-1]}, which is not a multiple of 4")
    return None


def _check_pack_not_batch(op: _Op):
    axis = int(getattr(op.options, "axis", 0) or 0)
    rank = len(op.outputs[0].shape) if op.outputs else 0
    if rank and axis % rank == 0:
        return ("op_constraint", "packs along the batch dimension")
    return None


def _paddings(op: _Op):
    p = op.inputs[1] if len(op.inputs) > 1 else None
    return None if p is None or p.data is None else np.asarray(p.data).reshape(-1, 2)


def _check_pad_not_batch(op: _Op):
    pads = _paddings(op)
    if pads is None:
        return ("non_constant_parameters", "paddings are not constant at compile time")
    if len(pads) >= 4 and np.any(pads[0] != 0):
        return ("op_constraint", f"pads the batch dimension by {pads[0].tolist()}")
    return None


def _check_pad_xy_only(op: _Op):
    pads = _paddings(op)
    if pads is None:
        return ("non_constant_parameters", "paddings are not constant at compile time")
    rank = len(pads)
    padded = [i for i in range(rank) if np.any(pads[i] != 0)]
    if rank >= 3 and not set(padded) <= {rank - 3, rank - 2}:
        return ("runtime_version", f"pads axes {padded}; runtime <= 12 supports only x/y padding "
                                   f"(min_runtime_version is {op.settings.min_runtime_version})")
    return None


def _check_prelu_alpha(op: _Op):
    alpha = op.inputs[1] if len(op.inputs) > 1 else None
    if alpha is not None and _non_unit_dims(alpha.shape[:-1]) > 0:
        return ("op_constraint", f"alpha shape {list(alpha.shape)} is not 1-dimensional "
                                 "(Keras PReLU needs shared_axes=[1, 2])")
    return None


def _check_three_dimensional_io(op: _Op):
    for t in [*op.inputs[:1], *op.outputs[:1]]:
        if t is not None and len(t.shape) == 4 and t.shape[0] != 1:
            return ("op_constraint", f"tensor {list(t.shape)} is not 3-dimensional (batch > 1)")
    return None


def _check_softmax(op: _Op):
    x = op.inputs[0]
    if _non_unit_dims(x.shape) > 1:
        return ("op_constraint", f"input shape {list(x.shape)} is not 1-D")
    size = int(np.prod(x.shape)) if x.shape else 1
    if size > 16000:
        return ("tensor_too_large", f"input has {size:,} elements; the Edge TPU softmax takes at most 16,000")
    return None


def _check_split_not_batch(op: _Op):
    axis_t, x = op.inputs[0], op.inputs[1] if len(op.inputs) > 1 else None
    if x is None:
        return None
    axes = _axes(axis_t, len(x.shape))
    if axes is None:
        return ("non_constant_parameters", "split axis is not constant at compile time")
    if len(x.shape) >= 4 and 0 in axes:
        return ("op_constraint", "splits along the batch dimension")
    return None


def _check_squeeze_leading_ones(op: _Op):
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


def _check_strided_slice(op: _Op):
    strides = op.inputs[3] if len(op.inputs) > 3 else None
    if strides is None or strides.data is None:
        return ("non_constant_parameters", "strides are not constant at compile time")
    if np.any(np.asarray(strides.data) != 1):
        return ("op_constraint", f"strides {np.asarray(strides.data).tolist()} are not all 1")
    if getattr(op.options, "ellipsisMask", 0) or getattr(op.options, "newAxisMask", 0):
        return ("op_constraint", "uses an ellipsis or new-axis mask")
    return None


def _check_transpose_not_batch(op: _Op):
    perm = op.inputs[1] if len(op.inputs) > 1 else None
    if perm is None or perm.data is None:
        return ("non_constant_parameters", "permutation is not constant at compile time")
    p = np.asarray(perm.data).reshape(-1)
    if len(p) >= 4 and int(p[0]) != 0:
        return ("op_constraint", f"permutation {p.tolist()} moves the batch dimension")
    return None


_CHECKS = {
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


def _macs_conv(op: _Op) -> int:  # kernel [out_ch, kh, kw, in_ch]: per output element kh*kw*in_ch
    w = op.inputs[1]
    return _prod(op.outputs[0].shape) * _prod(w.shape[1:])


def _macs_depthwise(op: _Op) -> int:  # kernel [1, kh, kw, out_ch]: per output element kh*kw
    w = op.inputs[1]
    return _prod(op.outputs[0].shape) * _prod(w.shape[1:3])


def _macs_fully_connected(op: _Op) -> int:  # weights [units, in]: per output element `in`
    w = op.inputs[1]
    return _prod(op.outputs[0].shape) * int(w.shape[-1])


def _macs_transpose_conv(op: _Op) -> int:  # weights [out_ch, kh, kw, in_ch]; input [1, h, w, in_ch]
    w, x = op.inputs[1], op.inputs[2]
    return _prod(x.shape) * int(w.shape[0]) * _prod(w.shape[1:3])


_MAC_RULES = {"conv": _macs_conv, "depthwise": _macs_depthwise, "fully_connected": _macs_fully_connected,
              "transpose_conv": _macs_transpose_conv}


def _op_details(raw: bytes) -> list[tuple[int, Any]]:
    """(version, builtin options) of each operator of the main subgraph, in order."""
    from edgec.tflite_model import _schema

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    codes = model.operatorCodes or []
    return [(int(codes[o.opcodeIndex].version or 1), o.builtinOptions) for o in (model.subgraphs[0].operators or [])]


def _own_problems(op: _Op, entry: dict | None, table: dict) -> list[tuple[str, str]]:
    """Reasons this op cannot run on the Edge TPU by itself (empty when it can)."""
    if entry is None:
        what = f"custom op '{op.name.split(':', 1)[1]}'" if op.name.startswith("CUSTOM:") else f"op {op.name}"
        return [("unsupported_op", f"{what} is not in the Edge TPU's supported operations")]
    problems: list[tuple[str, str]] = []
    runtime = op.settings.min_runtime_version
    since = entry.get("min_runtime")
    if since and runtime < since:
        problems.append(("runtime_version", f"{entry['coral']} needs Edge TPU runtime {since}+ "
                                            f"(min_runtime_version is {runtime})"))
    tensors = [t for t in [*op.inputs, *op.outputs] if t is not None]
    bad = [t for t in tensors if (t.dtype not in table["constant_dtypes"] if t.is_constant
                                  else t.dtype not in table["tensor_dtypes"] or not t.scale)]
    if bad:
        t = bad[0]
        kind = f"{t.dtype} without quantization" if t.dtype in table["tensor_dtypes"] else t.dtype
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        problems.append(("dtype", f"{'constant' if t.is_constant else 'tensor'} '{t.name}' is {kind}{more}; "
                                  "the Edge TPU runs 8-bit quantized tensors and parameters only"))
    for t in tensors:
        if any(d < 0 for d in t.shape_signature):
            problems.append(("dynamic_shape", f"tensor '{t.name}' has a dynamic shape {list(t.shape_signature)}; "
                                              "tensor sizes must be constant at compile time"))
            break
    keep = table["max_innermost_dims"]
    for t in tensors:
        if not t.is_constant and len(t.shape) > keep and _non_unit_dims(t.shape[:-keep]) > 0:
            problems.append(("rank", f"tensor '{t.name}' {list(t.shape)} has a dimension > 1 outside the "
                                     f"{keep} innermost"))
            break
    for i in entry.get("parameters", []):
        if i < len(op.inputs) and op.inputs[i] is not None and not op.inputs[i].is_constant:
            problems.append(("non_constant_parameters", f"input {i} ('{op.inputs[i].name}') is a model parameter "
                                                        "that is not constant at compile time"))
    if problems and any(c == "dtype" for c, _ in problems):
        return problems  # op-specific limits are moot on float/unquantized tensors
    for limit in entry.get("limits", []):
        if limit.get("min_runtime") and runtime < limit["min_runtime"]:
            continue
        if limit.get("max_runtime") and runtime > limit["max_runtime"]:
            continue
        for check in limit.get("checks", []):
            try:
                found = _CHECKS[check](op)
            except (IndexError, AttributeError, TypeError, ValueError) as exc:  # odd operand layout
                found = ("other", f"cannot evaluate '{check}' on this op ({exc})")
            if found:
                problems.append(found)
    return problems


def analyze(source: str | Path | bytes, settings: Settings | None = None) -> dict[str, Any]:
    """Decide op by op whether the Edge TPU runs a .tflite model, and why not.

    Args:
        source: path of a .tflite file or its bytes.
        settings: the profile's Edge TPU settings (min runtime version, cache size, TPUs);
            Coral's defaults when omitted.

    Returns:
        A JSON-ready report: ``ops`` (index, op, version, on_tpu, category, reason, MACs,
        parameter bytes), ``first_cpu_op``, ``totals`` (op and MAC shares, parameter bytes vs
        the on-chip cache), ``float_tensors`` and ``warnings``.

    Raises:
        EdgecError: unreadable or not a TFLite model.
    """
    from edgec import tflite_model

    settings = settings or Settings.from_profile(None)
    table = rules()
    raw = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    model = tflite_model.load(source if isinstance(source, (str, Path)) else raw)
    details = _op_details(raw)
    rows: list[dict[str, Any]] = []
    seen_params: set[int] = set()
    for op, (version, options) in zip(model.operators, details, strict=True):
        inputs = [model.tensors[i] if i >= 0 else None for i in op.inputs]
        outputs = [model.tensors[i] for i in op.outputs]
        view = _Op(op.index, op.op, version, options, inputs, outputs, settings)
        entry = table["ops"].get(op.op)
        problems = _own_problems(view, entry, table)
        macs = 0
        if entry and entry.get("macs"):
            try:
                macs = int(_MAC_RULES[entry["macs"]](view))
            except (IndexError, AttributeError, TypeError):  # unexpected operand layout: no estimate
                macs = 0
        params = [t for t in inputs if t is not None and t.is_parameter and t.index not in seen_params]
        seen_params.update(t.index for t in params)
        out = outputs[0] if outputs else None
        rows.append({
            "index": op.index, "op": op.op, "version": version, "coral_op": entry.get("coral") if entry else None,
            "own_problems": [{"category": c, "reason": r} for c, r in problems],
            "macs": macs, "param_bytes": int(sum(t.nbytes for t in params)),
            "output": {"dtype": out.dtype, "shape": list(out.shape_signature or out.shape)} if out else None,
            "note": entry.get("notes") if entry else None,
        })
    start = next((r["index"] for r in rows if not r["own_problems"]), None)
    first_cpu = None
    if start is None:
        first_cpu = rows[0]["index"] if rows else None
    else:
        first_cpu = next((r["index"] for r in rows[start:] if r["own_problems"]), None)
    for r in rows:
        i = r["index"]
        if r["own_problems"]:
            r["on_tpu"] = False
            r["category"] = r["own_problems"][0]["category"]
            r["reason"] = "; ".join(p["reason"] for p in r["own_problems"])
            if start is not None and i < start:
                r["reason"] += " (before the Edge TPU subgraph; runs on the CPU)"
        elif first_cpu is not None and i > first_cpu:
            r.update(on_tpu=False, category="after_cpu_op",
                     reason=f"after the first CPU op #{first_cpu} {rows[first_cpu]['op']}: the compiler maps one "
                            "contiguous Edge TPU subgraph, so everything after that op runs on the CPU")
        else:
            r.update(on_tpu=True, category="mapped", reason="maps to the Edge TPU")
    for r in rows:  # a CPU op that would map by itself keeps that fact for the reader
        if r["category"] == "after_cpu_op":
            r["reason"] += " (supported by itself)" if not r["own_problems"] else \
                f" (also: {'; '.join(p['reason'] for p in r['own_problems'])})"
    total_macs = sum(r["macs"] for r in rows)
    tpu_rows = [r for r in rows if r["on_tpu"]]
    tpu_macs = sum(r["macs"] for r in tpu_rows)
    param_bytes = sum(r["param_bytes"] for r in rows)
    tpu_param_bytes = sum(r["param_bytes"] for r in tpu_rows)
    cache = settings.cache_bytes
    floats = [t.name for t in model.tensors if t.dtype.startswith(("float", "bfloat"))]
    warnings: list[str] = []
    if first_cpu is not None:
        fc = rows[first_cpu]
        where = ("no op maps to the Edge TPU, starting" if start is None else
                 f"{len(rows) - len(tpu_rows)} of {len(rows)} ops run on the CPU; the Edge TPU subgraph ends")
        warnings.append(f"{where} at op #{first_cpu} {fc['op']}: {fc['reason']}")
    if tpu_param_bytes > cache:
        warnings.append(
            f"parameters mapped to the Edge TPU (about {tpu_param_bytes / 2**20:.2f} MiB) exceed the on-chip cache "
            f"({cache / 2**20:.2f} MiB over {settings.num_segments} Edge TPU(s)): about "
            f"{(tpu_param_bytes - cache) / 2**20:.2f} MiB will stream from off-chip memory on every inference, "
            "which is slower; use a smaller model or segment it over more Edge TPUs")
    if model.num_subgraphs > 1:
        warnings.append(f"the model has {model.num_subgraphs} subgraphs; the Edge TPU compiler maps only the first")
    if floats:
        warnings.append(f"{len(floats)} float tensors (first: '{floats[0]}'); the Edge TPU needs full-integer models")
    for r in rows:
        r.pop("own_problems")
    return {
        "file": str(source) if isinstance(source, (str, Path)) else None,
        "rules": {"sources": table["sources"], "min_runtime_version": settings.min_runtime_version,
                  "cache_mb": settings.cache_mb, "num_tpus": settings.num_tpus},
        "ops": rows,
        "first_cpu_op": None if first_cpu is None else {k: rows[first_cpu][k] for k in ("index", "op", "category", "reason")},
        "tpu_subgraph": None if start is None else {"start": start, "end": len(rows) - 1 if first_cpu is None else first_cpu - 1},
        "float_tensors": floats,
        "totals": {
            "ops": len(rows),
            "ops_on_tpu": len(tpu_rows),
            "op_share": round(len(tpu_rows) / len(rows), 6) if rows else None,
            "macs": total_macs,
            "macs_on_tpu": tpu_macs,
            "mac_share": round(tpu_macs / total_macs, 6) if total_macs else None,
            "param_bytes": param_bytes,
            "param_bytes_on_tpu": tpu_param_bytes,
            "cache_bytes": cache,
            "cache_share": round(tpu_param_bytes / cache, 6) if cache else None,
            "off_chip_bytes_estimate": max(0, tpu_param_bytes - cache),
            "file_bytes": model.size,
        },
        "warnings": warnings,
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human lines about an analysis (and the compiler, when it ran)."""
    t = report["totals"]
    share = f"{t['mac_share'] * 100:.1f} %" if t["mac_share"] is not None else "n/a (no MAC ops)"
    lines = [
        f"Edge TPU: {t['ops_on_tpu']}/{t['ops']} ops mapped ({(t['op_share'] or 0) * 100:.1f} %), "
        f"{share} of {t['macs']:,} MACs; parameters {t['param_bytes_on_tpu'] / 2**20:.2f} MiB on-chip of "
        f"{t['cache_bytes'] / 2**20:.0f} MiB cache (estimate)"
    ]
    fc = report.get("first_cpu_op")
    if fc is not None:
        lines.append(f"first CPU op: #{fc['index']} {fc['op']}: {fc['reason']}")
    compiler = report.get("compiler")
    if compiler:
        if compiler["status"] == "compiled":
            c = compiler.get("totals") or {}
            lines.append(f"edgetpu_compiler {compiler.get('version') or ''}: compiled, {c.get('ops_on_tpu')}/"
                         f"{c.get('ops')} ops on the Edge TPU; {len(compiler.get('disagreements') or [])} "
                         "disagreements with the analysis")
        else:
            lines.append(f"{compiler['status'].replace('_', ' ')}: {compiler['reason']}")
            if compiler.get("command"):
                lines.append(f"compile with: {compiler['command']}")
    return lines


# --------------------------------------------------------------------------------------------
# compiler log parsing

_SIZE_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
_ROW = re.compile(r"^\s*([A-Z][A-Z0-9_]*(?::\S+)?)\s+(\d+)\s+(\S.*?)\s*$")
_FIELDS = {
    "Input model": ("input_model", str), "Input": ("input_model", str),
    "Output model": ("output_model", str), "Output": ("output_model", str),
    "Input size": ("input_bytes", "size"), "Output size": ("output_bytes", "size"),
    "On-chip memory used for caching model parameters": ("on_chip_bytes", "size"),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", "size"),
    "On-chip memory available for caching model parameters": ("on_chip_available_bytes", "size"),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_bytes", "size"),
    "Number of Edge TPU subgraphs": ("tpu_subgraphs", int),
    "Total number of operations": ("ops", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("ops_on_tpu", int),
    "Number of operations that will run on CPU": ("ops_on_cpu", int),
}


def _size(text: str) -> int | None:
    m = re.match(r"^\s*([\d.]+)\s*([KMG]i?B|B)\s*$", text)
    return int(round(float(m.group(1)) * _SIZE_UNITS[m.group(2)])) if m else None


def status_category(status: str) -> str:
    """The analysis category of an edgetpu_compiler status line."""
    return COMPILER_STATUS.get(status.strip(), "other")


def parse_compiler_output(text: str) -> dict[str, Any]:
    """Parse what edgetpu_compiler prints (and the ``*_edgetpu.log`` files it writes).

    Handles the console output (``-s`` adds the per-op table), segmented compiles (one block
    per segment) and the operation log files (``Input:``/``Output:`` then the table).

    Returns:
        ``version``, ``succeeded`` (True/False, None when the text does not say), ``errors``
        (the compiler's error lines) and ``models``: one entry per compiled model or segment
        with its summary fields (sizes in bytes) and ``operators`` rows
        (op, count, status, on_tpu, category).
    """
    version = None
    succeeded: bool | None = None
    errors: list[str] = []
    models: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    in_table = False
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        m = re.match(r"^Edge TPU Compiler version (\S+)", s)
        if m:
            version = version or m.group(1)
            continue
        if s.startswith(("Compilation succeeded", "Models compiled successfully", "Model compiled successfully")):
            if s.startswith("Compilation succeeded"):
                succeeded = True
            m = re.search(r"in (\d+) ms", s)
            if m:  # each compiled model or segment starts with this line, then its summary fields
                current = {"compile_ms": int(m.group(1)), "operators": []}
                models.append(current)
            in_table = False
            continue
        if s.startswith(("Compilation failed", "ERROR:", "Invalid model", "Model not quantized",
                         "Model could not be parsed")):
            if not s.startswith("ERROR:"):  # ERROR lines may be followed by a successful retry
                succeeded = False
            if s not in ("Compilation failed!",):
                errors.append(s)
            in_table = False
            continue
        if re.match(r"^Operator\s+Count\s+Status$", s):
            in_table = True
            if current is None:
                current = {"operators": []}
                models.append(current)
            continue
        key, sep, value = s.partition(":")
        if sep and key in _FIELDS:
            name, kind = _FIELDS[key]
            if name == "input_model" and current is not None and current.get("input_model"):
                current = {"operators": []}  # a second model/segment in the same output
                models.append(current)
            if current is None:
                current = {"operators": []}
                models.append(current)
            value = value.strip()
            current[name] = _size(value) if kind == "size" else (int(value) if kind is int else value)
            in_table = False
            continue
        if in_table:
            m = _ROW.match(line)
            if m:
                status = m.group(3)
                category = status_category(status)
                current["operators"].append({"op": m.group(1), "count": int(m.group(2)), "status": status,
                                             "on_tpu": category == "mapped", "category": category})
                continue
            in_table = False
    for model in models:
        ops = model.get("operators") or []
        if ops and "ops_on_tpu" not in model:
            model["ops_on_tpu"] = sum(o["count"] for o in ops if o["on_tpu"])
            model["ops_on_cpu"] = sum(o["count"] for o in ops if not o["on_tpu"])
    models = [m for m in models if len(m) > 1 or m.get("operators")]
    return {"version": version, "succeeded": succeeded, "errors": errors, "models": models}


def compiler_totals(parsed: dict[str, Any]) -> dict[str, Any]:
    """Totals over all compiled models/segments of a parsed compiler output (None when unknown)."""
    models = parsed["models"]

    def total(key):
        values = [m.get(key) for m in models]
        return sum(values) if values and all(v is not None for v in values) else None

    return {k: total(k) for k in ("ops", "ops_on_tpu", "ops_on_cpu", "on_chip_bytes", "off_chip_bytes",
                                  "tpu_subgraphs")}


def compare(report: dict[str, Any], parsed: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the compiler's per-op table and the analysis disagree (per op type counts).

    Returns:
        One entry per op type whose Edge TPU / CPU counts differ, with both sides' reasons,
        plus an entry for the total op count when it differs. Empty when they agree or the
        compiler printed no per-op table.
    """
    rows = [o for m in parsed["models"] for o in m.get("operators", [])]
    if not rows:
        return []
    ours: dict[str, dict[str, Any]] = {}
    for r in report["ops"]:
        name = r["op"].split(":")[0]  # the compiler prints custom ops as CUSTOM
        side = ours.setdefault(name, {"on_tpu": 0, "on_cpu": 0, "reasons": []})
        side["on_tpu" if r["on_tpu"] else "on_cpu"] += 1
        if not r["on_tpu"] and r["category"] not in side["reasons"]:
            side["reasons"].append(r["category"])
    theirs: dict[str, dict[str, Any]] = {}
    for o in rows:
        side = theirs.setdefault(o["op"], {"on_tpu": 0, "on_cpu": 0, "statuses": []})
        side["on_tpu" if o["on_tpu"] else "on_cpu"] += o["count"]
        if not o["on_tpu"] and o["status"] not in side["statuses"]:
            side["statuses"].append(o["status"])
    out = []
    for name in sorted(set(ours) | set(theirs)):
        a = ours.get(name, {"on_tpu": 0, "on_cpu": 0, "reasons": []})
        c = theirs.get(name, {"on_tpu": 0, "on_cpu": 0, "statuses": []})
        if (a["on_tpu"], a["on_cpu"]) != (c["on_tpu"], c["on_cpu"]):
            out.append({"op": name, "analysis": a, "compiler": c})
    n_ours, n_theirs = len(report["ops"]), sum(o["count"] for o in rows)
    if n_ours != n_theirs:
        out.append({"op": "(total)", "analysis": {"ops": n_ours}, "compiler": {"ops": n_theirs}})
    return out


# --------------------------------------------------------------------------------------------
# running the compiler


def host_can_compile() -> str | None:
    """Why this host cannot run edgetpu_compiler, or None when it can (x86-64 only)."""
    machine = platform.machine().lower()
    if machine not in rules()["compiler"]["host_arch"]:
        return (f"edgetpu_compiler runs only on x86-64 Linux hosts; this host is {machine or 'unknown'}: compile on "
                f"an x86-64 machine or in Coral's web compiler ({rules()['compiler']['web']})")
    return None


def find_compiler() -> str | None:
    """Path of edgetpu_compiler on PATH (None when absent)."""
    return shutil.which(rules()["compiler"]["executable"])


def compiler_command(model: Path, out_dir: Path, settings: Settings, executable: str = "edgetpu_compiler") -> list[str]:
    """The compiler invocation for a profile: ``-s`` (per-op table), ``-m``, ``-t``, ``-o``, segments."""
    cmd = [executable, "-s", "-m", str(settings.min_runtime_version), "-t", str(settings.compile_timeout_s),
           "-o", str(out_dir)]
    if settings.num_segments > 1:
        cmd.append(f"--num_segments={settings.num_segments}")
    return [*cmd, str(model)]


def unavailable_reason() -> str | None:
    """Why the compiler cannot run here (wrong host or not installed), or None."""
    problem = host_can_compile()
    if problem:
        return problem
    if find_compiler() is None:
        return f"edgetpu_compiler not found on PATH (install: {rules()['compiler']['install']})"
    return None


def compile_model(model: Path, settings: Settings, *, user_out_dir: Path) -> dict[str, Any]:
    """Run edgetpu_compiler on ``model`` (inside its directory) when this host can.

    Args:
        model: the int8 .tflite inside the build directory.
        settings: the profile's Edge TPU settings.
        user_out_dir: where the build ends up (for the command shown to the user).

    Returns:
        ``status`` ("compiled", "not_compiled", "failed", "timed_out"), ``reason``, ``command``
        (what to run by hand), and when it ran: ``invocation``, ``returncode``, ``version``,
        ``parsed`` output, and ``files`` (compiled models and op logs, names relative to the
        build directory).
    """
    manual = shlex.join(compiler_command(user_out_dir / model.name, user_out_dir, settings))
    problem = host_can_compile()
    if problem:
        return {"status": "not_compiled", "reason": problem, "command": manual}
    exe = find_compiler()
    if exe is None:
        return {"status": "not_compiled", "reason": "edgetpu_compiler not found", "command": manual,
                "install": rules()["compiler"]["install"]}
    work = model.parent / ".edgetpu"
    work.mkdir(exist_ok=True)
    # compile a copy named model.tflite so the compiler's own names are model_edgetpu.tflite,
    # model_segment_K_of_N_edgetpu.tflite and model_edgetpu.log
    src = work / "model.tflite"
    shutil.copyfile(model, src)
    cmd = compiler_command(src.name, Path("."), settings, executable=exe)
    result: dict[str, Any] = {"command": manual, "invocation": shlex.join(cmd)}
    log.info("running %s", result["invocation"])
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                              timeout=settings.compile_timeout_s + TIMEOUT_MARGIN_S)
    except subprocess.TimeoutExpired as exc:
        text = _text(exc.stdout) + _text(exc.stderr)
        (model.parent / COMPILER_STDOUT).write_text(text)
        shutil.rmtree(work, ignore_errors=True)
        return {**result, "status": "timed_out", "files": [COMPILER_STDOUT],
                "reason": f"edgetpu_compiler did not finish within {settings.compile_timeout_s + TIMEOUT_MARGIN_S} s",
                "parsed": parse_compiler_output(text)}
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        return {**result, "status": "failed", "reason": f"cannot run {exe}: {exc.strerror or exc}"}
    text = proc.stdout + (("\n" + proc.stderr) if proc.stderr else "")
    (model.parent / COMPILER_STDOUT).write_text(text)
    parsed = parse_compiler_output(text)
    files = [COMPILER_STDOUT]
    produced = sorted(p for p in work.iterdir() if p.name != src.name)
    for p in produced:
        if p.suffix in (".tflite", ".log"):
            shutil.move(str(p), model.parent / p.name)
            files.append(p.name)
    shutil.rmtree(work, ignore_errors=True)
    models = [f for f in files if f.endswith("_edgetpu.tflite")]
    for m in parsed["models"]:  # read the op table from the log file when the console had none
        log_name = Path(m.get("operation_log") or "").name
        if not m.get("operators") and log_name in files:
            from_log = parse_compiler_output((model.parent / log_name).read_text())
            if from_log["models"]:
                m["operators"] = from_log["models"][0].get("operators", [])
                if "ops_on_tpu" not in m and "ops_on_tpu" in from_log["models"][0]:
                    m["ops_on_tpu"] = from_log["models"][0]["ops_on_tpu"]
                    m["ops_on_cpu"] = from_log["models"][0]["ops_on_cpu"]
    result.update(returncode=proc.returncode, version=parsed["version"], parsed=parsed, files=files,
                  models=models)
    if proc.returncode != 0 or parsed["succeeded"] is False or not models:
        why = "; ".join(parsed["errors"][:3]) or (proc.stderr.strip().splitlines() or [""])[-1] or \
            f"exit status {proc.returncode}"
        if proc.returncode == 0 and not models and not parsed["errors"]:
            why = "the compiler exited 0 but wrote no *_edgetpu.tflite"
        result.update(status="failed", reason=f"edgetpu_compiler failed: {why}")
        return result
    result.update(status="compiled", reason=None)
    return result


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


# --------------------------------------------------------------------------------------------
# the target


class EdgeTPUTarget(Target):
    """Coral devices (USB Accelerator, Dev Board, M.2 and Dual M.2 cards) running the Edge TPU."""

    kind = "edgetpu"
    runtime = "edgetpu"

    def check(self, profile: Profile, precision: Precision, options: BuildOptions) -> None:
        if precision is not Precision.INT8:
            raise EdgecError(
                f"the Edge TPU runs only full-integer 8-bit models, so profile '{profile.id}' ({profile.device}) "
                f"cannot build precision '{precision.value}'; use --precision int8 (its default) with --calib DATA, "
                "or a CPU profile (x86-cpu, rpi5) for float artifacts"
            )
        if not options.has_representative_data:
            raise EdgecError(
                f"the Edge TPU needs a full-integer model calibrated on representative data: pass --calib DATA "
                f"(.npz, .npy, image folder or module:function), or --qat with --fine-tune DATA, "
                f"for profile '{profile.id}'"
            )
        if getattr(options, "require_compiler", False):
            problem = unavailable_reason()
            if problem:
                out = Path(options.out) / profile.id
                cmd = shlex.join(compiler_command(out / INT8_MODEL, out, Settings.from_profile(profile)))
                raise CheckFailed(f"--require-compiler: {problem}; without --require-compiler edgec writes the "
                                  f"EdgeTPU-ready {INT8_MODEL} and the op map, then compile with: {cmd}")

    def build(self, ctx: BuildContext) -> list[Artifact]:
        from edgec.targets.tflite import artifact_info, convert

        settings = Settings.from_profile(ctx.profile)
        content = convert(ctx.model, Precision.INT8, calib=ctx.calib, io_dtype=ctx.profile.int8_io,
                          progress=ctx.progress, batch_size=1)
        int8 = ctx.workdir / INT8_MODEL
        int8.write_bytes(content)
        with ctx.progress.task("analyze: Edge TPU op map"):
            report = analyze(int8, settings)
        report["file"] = INT8_MODEL
        with ctx.progress.task("compile: edgetpu_compiler"):
            compiled = compile_model(int8, settings, user_out_dir=Path(ctx.options.out) / ctx.profile.id)
        compiler: dict[str, Any] = {k: compiled.get(k) for k in ("status", "reason", "command", "invocation",
                                                                  "returncode", "version", "install") if
                                    compiled.get(k) is not None}
        if compiled.get("parsed") is not None:
            parsed = compiled["parsed"]
            compiler.update(parsed=parsed, totals=compiler_totals(parsed), log=COMPILER_STDOUT)
            if compiled["status"] == "compiled":
                compiler["disagreements"] = compare(report, parsed)
        report["compiler"] = compiler
        (ctx.workdir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")

        for line in summary_lines(report):
            log.info("%s", line)
        if compiled["status"] != "compiled":
            log.warning("%s: %s%s", compiled["status"].replace("_", " "), compiled["reason"],
                        f"; compile with: {compiled['command']}" if compiled.get("command") else "")
        if getattr(ctx.options, "require_compiler", False) and compiled["status"] != "compiled":
            raise CheckFailed(f"--require-compiler: {compiled['reason']}; rerun without --require-compiler to keep "
                              f"{INT8_MODEL}, {REPORT_FILE} and the compiler log")

        int8_art = Artifact(file=INT8_MODEL, role="model", format="tflite", precision="int8", verify_with="litert",
                            info=artifact_info(int8))
        report_art = Artifact(file=REPORT_FILE, role="report", format="json")
        extra_files = [Artifact(file=f, role="log", format="text") for f in compiled.get("files", [])
                       if not f.endswith(".tflite")]
        tpu_models = [Artifact(file=f, role="edgetpu_model", format="tflite", precision="int8", verify_with=None,
                               info={"segment": _segment(f), "runs_on": "Edge TPU (needs libedgetpu)"})
                      for f in compiled.get("models", [])]
        t = report["totals"]
        ctx.extra["edgetpu"] = {
            "compiled": compiled["status"] == "compiled",
            "compiler": {k: v for k, v in compiler.items() if k != "parsed"},
            "analysis": {"report": REPORT_FILE, "first_cpu_op": report["first_cpu_op"], "warnings": report["warnings"],
                         **{k: t[k] for k in ("ops", "ops_on_tpu", "op_share", "macs", "macs_on_tpu", "mac_share",
                                              "param_bytes_on_tpu", "cache_bytes", "off_chip_bytes_estimate")},
                         "float_tensors": len(report["float_tensors"])},
            "settings": dataclasses.asdict(settings),
            "summary": summary_lines(report),
        }
        if compiled["status"] != "compiled":
            ctx.extra["edgetpu"]["not_compiled"] = f"{compiled['status'].replace('_', ' ')}: {compiled['reason']}"
        # the device runs the compiled model when there is one; LiteRT verifies the int8 model on the host
        return [*tpu_models, int8_art, report_art, *extra_files]

    def runner(self, path: Path, ctx: BuildContext | None = None):
        from edgec.targets.tflite import LiteRTRunner

        if Path(path).name != INT8_MODEL:
            raise EdgecError(f"'{Path(path).name}' runs only on an Edge TPU; the host verifies {INT8_MODEL}")
        threads = ctx.profile.threads if ctx is not None and ctx.profile.threads else None
        return LiteRTRunner(path, threads=min(threads or os.cpu_count() or 1, os.cpu_count() or 1))


def _segment(name: str) -> dict[str, int] | None:
    m = re.search(r"_segment_(\d+)_of_(\d+)_edgetpu\.tflite$", name)
    return {"index": int(m.group(1)), "of": int(m.group(2))} if m else None

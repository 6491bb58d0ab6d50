"""What is inside an artifact: per-op weights, sparsity, unique values, bytes, compressed size."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from edgec import tflite_model


def compressed_sizes(data: bytes) -> dict[str, int]:
    """gzip (level 9) and, when zstandard is installed, zstd (level 19) sizes of ``data``."""
    sizes = {"gzip": len(gzip.compress(data, compresslevel=9, mtime=0))}
    try:
        import zstandard
    except ImportError:
        return sizes
    sizes["zstd"] = len(zstandard.ZstdCompressor(level=19).compress(data))
    return sizes


def zero_share(t: tflite_model.Tensor) -> float:
    """Share of weights that encode zero (the zero point for quantized tensors)."""
    if t.data is None or t.data.size == 0:
        return 0.0
    return float(zero_mask(t).mean())


def unique_per_channel(t: tflite_model.Tensor) -> int:
    """Most distinct values in any output channel of a kernel (clustering shows up here).

    Per-channel quantization rescales each output channel separately, so a kernel clustered to
    N shared values keeps at most N per channel, not N over the whole tensor.
    """
    data = t.data
    if data is None or data.size == 0:
        return 0
    axis = t.quantized_dimension if len(t.scale) > 1 else 0
    if data.ndim < 2:
        return int(np.unique(data).size)
    moved = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
    return int(max(np.unique(row).size for row in moved))


#: ops whose kernel keeps the input (reduction) axis last: (out, ..., in)
INPUT_AXIS_LAST_OPS = ("CONV_2D", "FULLY_CONNECTED", "CONV_3D")


def zero_mask(t: tflite_model.Tensor) -> np.ndarray:
    """Where a weight tensor encodes zero (its zero point for quantized tensors)."""
    data = t.data
    if t.zero_point and len(t.zero_point) > 1 and data.ndim > t.quantized_dimension:
        zp = np.asarray(t.zero_point).reshape([-1 if i == t.quantized_dimension else 1 for i in range(data.ndim)])
        return data == zp
    return data == (t.zero_point[0] if t.zero_point else 0)


def group_sparsity(t: tflite_model.Tensor, zeros: int = 2, group: int = 4) -> dict[str, Any] | None:
    """How many groups of ``group`` consecutive weights along the input axis hold at least ``zeros``
    zeros (2:4 structured sparsity), for kernels laid out (out, ..., in).

    A last group shorter than ``group`` (input size not a multiple of it) counts as padded with
    zeros, as TF-MOT's m-by-n masks treat it: it complies when it has at most
    ``group - zeros`` non-zeros.
    """
    data = t.data
    if data is None or data.ndim < 2 or data.size == 0:
        return None
    nonzero = ~zero_mask(t).reshape(-1, data.shape[-1])
    pad = (-nonzero.shape[1]) % group
    if pad:
        nonzero = np.concatenate([nonzero, np.zeros((nonzero.shape[0], pad), dtype=bool)], axis=1)
    per_group = nonzero.reshape(nonzero.shape[0], -1, group).sum(axis=2)
    ok = per_group <= group - zeros
    return {"pattern": f"{zeros}:{group}", "groups": int(ok.size), "compliant_share": round(float(ok.mean()), 6),
            "input_size": int(data.shape[-1])}


def saturated_bias(t: tflite_model.Tensor) -> int:
    """How many int32 bias values sit at the int32 limit: a bias scale (input x weight scale) too
    small for the bias, so the artifact computes a clipped value."""
    if t is None or t.data is None or t.dtype != "int32" or not t.scale:
        return 0
    info = np.iinfo(np.int32)
    return int(np.sum((t.data == info.max) | (t.data == info.min)))


def inspect_tflite(path: Path) -> dict[str, Any]:
    """Per-op rows and totals for a .tflite file.

    Raises:
        EdgecError: unreadable or not a TFLite file.
    """
    path = Path(path)
    m = tflite_model.load(path)
    rows = []
    seen: set[int] = set()
    for op in m.operators:
        weights = [t for t in m.weights(op) if t.index not in seen]
        seen.update(t.index for t in weights)
        kernel = m.kernel(op)
        out = m.tensors[op.outputs[0]] if op.outputs else None
        rows.append({
            "index": op.index,
            "op": op.op,
            "output": out.name if out else None,
            "dtype": out.dtype if out else None,
            "shape": list(out.shape_signature or out.shape) if out else None,
            "weight_dtype": kernel.dtype if kernel else None,
            "weight_shape": list(kernel.shape) if kernel else None,
            "weight_scales": len(kernel.scale) if kernel else None,  # 1: per tensor, else per channel
            "params": int(sum(t.num_params for t in weights)),
            "zero_share": round(zero_share(kernel), 6) if kernel is not None else None,
            "unique_values": unique_per_channel(kernel) if kernel is not None else None,
            "unique_values_tensor": int(np.unique(kernel.data).size) if kernel is not None else None,
            "bytes": int(sum(t.nbytes for t in weights)),
            "sparsity_2_4": (group_sparsity(kernel)["compliant_share"]
                             if kernel is not None and op.op in INPUT_AXIS_LAST_OPS else None),
            "saturated_bias": sum(saturated_bias(t) for t in weights if t.data is not None and t.data.ndim == 1),
        })
    raw = path.read_bytes()
    kernels = [m.kernel(op) for op in m.operators]
    kernels = [k for k in kernels if k is not None]
    kernel_params = sum(k.data.size for k in kernels)
    zeros = sum(zero_share(k) * k.data.size for k in kernels)
    structured = [r["sparsity_2_4"] for r in rows if r["sparsity_2_4"] is not None]
    totals = {
        "ops": len(m.operators),
        "tensors": len(m.tensors),
        "params": int(sum(r["params"] for r in rows)),
        "weight_bytes": int(sum(r["bytes"] for r in rows)),
        "kernel_params": int(kernel_params),
        "kernel_zero_share": round(float(zeros / kernel_params), 6) if kernel_params else 0.0,
        "max_unique_per_channel": max((r["unique_values"] for r in rows if r["unique_values"] is not None), default=0),
        "sparsity_2_4_min": min(structured) if structured else None,
        "saturated_bias": int(sum(r["saturated_bias"] for r in rows)),
        "file_bytes": len(raw),
        **{f"{k}_bytes": v for k, v in compressed_sizes(raw).items()},
    }
    integer = any(t.dtype in ("int8", "uint8", "int16") and t.scale for t in m.tensors if not t.is_constant)
    return {
        "file": str(path),
        "format": "tflite",
        "inputs": [m.tensors[i].describe() for i in m.inputs],
        "outputs": [dict(m.tensors[i].describe(), name=n, index=k)
                    for k, (i, n) in enumerate(zip(m.outputs, m.output_names(), strict=True))],
        "op_counts": m.op_counts(),
        "float_ops": tflite_model.float_ops(m) if integer else None,
        "ops": rows,
        "totals": totals,
    }

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


def _zero_share(t: tflite_model.Tensor) -> float:
    """Share of weights that encode zero (the zero point for quantized tensors)."""
    data = t.data
    if data is None or data.size == 0:
        return 0.0
    if t.zero_point and len(t.zero_point) > 1 and data.ndim > t.quantized_dimension:
        zp = np.asarray(t.zero_point).reshape([-1 if i == t.quantized_dimension else 1 for i in range(data.ndim)])
        return float((data == zp).mean())
    zero = t.zero_point[0] if t.zero_point else 0
    return float((data == zero).mean())


def _unique_per_channel(t: tflite_model.Tensor) -> int:
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
            "params": int(sum(t.num_params for t in weights)),
            "zero_share": round(_zero_share(kernel), 6) if kernel is not None else None,
            "unique_values": _unique_per_channel(kernel) if kernel is not None else None,
            "unique_values_tensor": int(np.unique(kernel.data).size) if kernel is not None else None,
            "bytes": int(sum(t.nbytes for t in weights)),
        })
    raw = path.read_bytes()
    kernels = [m.kernel(op) for op in m.operators]
    kernels = [k for k in kernels if k is not None]
    kernel_params = sum(k.data.size for k in kernels)
    zeros = sum(_zero_share(k) * k.data.size for k in kernels)
    totals = {
        "ops": len(m.operators),
        "tensors": len(m.tensors),
        "params": int(sum(r["params"] for r in rows)),
        "weight_bytes": int(sum(r["bytes"] for r in rows)),
        "kernel_params": int(kernel_params),
        "kernel_zero_share": round(float(zeros / kernel_params), 6) if kernel_params else 0.0,
        "file_bytes": len(raw),
        **{f"{k}_bytes": v for k, v in compressed_sizes(raw).items()},
    }
    return {
        "file": str(path),
        "format": "tflite",
        "inputs": [m.tensors[i].describe() for i in m.inputs],
        "outputs": [m.tensors[i].describe() for i in m.outputs],
        "op_counts": m.op_counts(),
        "ops": rows,
        "totals": totals,
    }

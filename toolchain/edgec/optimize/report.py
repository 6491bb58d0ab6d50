"""Where the savings came from, read from the artifact: a per-layer table in the spirit of Deep
Compression's Table 4 (Han et al., 2016) and totals against the float ``.tflite``.

Per layer: parameters, share of weights kept (non-zero), unique values per output channel and
over the kernel, bits per weight as stored, as a codebook index would need them
(ceil(log2(unique values per channel))) and after zstd, and bytes. Totals: parameters, artifact
bytes, gzip and zstd bytes, and compression rates against the float ``.tflite`` converted from the
original model in the same build.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgec import inspection, tflite_model

_DTYPE_BITS = {"int8": 8, "uint8": 8, "int16": 16, "float16": 16, "float32": 32, "int32": 32}
_WRAPPER_PREFIXES = ("quant_", "prune_low_magnitude_", "cluster_")


def _layer_for(names: list[str], layer_names: set[str]) -> str | None:
    """The Keras layer a TFLite tensor came from, from its name ('model/quant_conv2d/Conv2D;...')."""
    for name in names:
        for part in name.replace(";", "/").split("/"):
            candidates = [part] + [part[len(p):] for p in _WRAPPER_PREFIXES if part.startswith(p)]
            for cand in candidates:
                if cand in layer_names:
                    return cand
    return None


def _zstd_bits(data: np.ndarray) -> float | None:
    sizes = inspection.compressed_sizes(np.ascontiguousarray(data).tobytes())
    return round(8.0 * sizes["zstd"] / data.size, 3) if "zstd" in sizes and data.size else None


def layer_table(path: Path, layer_kernels: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One row per op with a kernel (Conv/Dense-like) in the artifact, named after the Keras layer
    it came from (``layer_kernels``: layer name -> its kernels); a layer with several kernels
    (SeparableConv2D) gets a row per kernel, e.g. ``sep (depthwise_kernel)``."""
    layer_names = set(layer_kernels)
    m = tflite_model.load(path)
    rows = []
    for op in m.operators:
        kernel = m.kernel(op)
        if kernel is None or kernel.data is None:
            continue
        weights = m.weights(op)
        out = m.tensors[op.outputs[0]].name if op.outputs else ""
        unique_ch = inspection.unique_per_channel(kernel)
        zero = inspection.zero_share(kernel)
        row = {
            "layer": _layer_for([kernel.name, out], layer_names) or out.split(";")[0],
            "op": op.op,
            "kernel_shape": list(kernel.shape),
            "params": int(kernel.data.size),
            "kept_share": round(1.0 - zero, 6),
            "zero_share": round(zero, 6),
            "unique_per_channel": unique_ch,
            "unique": int(np.unique(kernel.data).size),
            "bits": _DTYPE_BITS.get(kernel.dtype),
            "index_bits": max(1, math.ceil(math.log2(unique_ch))) if unique_ch > 1 else 1,
            "zstd_bits": _zstd_bits(kernel.data),
            "bytes": int(sum(t.nbytes for t in weights)),
            "saturated_bias": sum(inspection.saturated_bias(t) for t in weights if t.data.ndim == 1),
        }
        if op.op in inspection.INPUT_AXIS_LAST_OPS:
            row["sparsity_2_4"] = inspection.group_sparsity(kernel)["compliant_share"]
        kernels = layer_kernels.get(row["layer"], [])
        if len(kernels) > 1:
            role = "depthwise_kernel" if op.op == "DEPTHWISE_CONV_2D" and "depthwise_kernel" in kernels else kernels[-1]
            row["kernel"] = role
            row["layer"] = f"{row['layer']} ({role})"
        rows.append(row)
    return rows


def artifact_report(path: Path, float_tflite_bytes: int | None, layer_kernels: dict[str, list[str]]) -> dict[str, Any]:
    """Per-layer rows and totals for a .tflite artifact."""
    details = inspection.inspect_tflite(path)
    totals = details["totals"]
    rows = layer_table(path, layer_kernels)
    kernel_params = sum(r["params"] for r in rows)
    out: dict[str, Any] = {
        "artifact": Path(path).name,
        "layers": rows,
        "totals": {
            "params": totals["params"],
            "kernel_params": kernel_params,
            "kernel_kept_share": round(1.0 - totals["kernel_zero_share"], 6),
            "kernel_zero_share": totals["kernel_zero_share"],
            "max_unique_per_channel": totals["max_unique_per_channel"],
            "max_unique_per_kernel": max((r["unique"] for r in rows), default=0),
            "sparsity_2_4_min": totals["sparsity_2_4_min"],
            "saturated_bias": totals["saturated_bias"],
            "artifact_bytes": totals["file_bytes"],
            # what is not weights: graph, tensor names, quantization parameters (per-channel scales)
            "weight_bytes": totals["weight_bytes"],
            "non_weight_bytes": totals["file_bytes"] - totals["weight_bytes"],
            "gzip_bytes": totals["gzip_bytes"],
            "zstd_bytes": totals.get("zstd_bytes"),
            "float_tflite_bytes": float_tflite_bytes,
        },
    }
    if float_tflite_bytes:
        t = out["totals"]
        t["compression_rate"] = {
            key: round(float_tflite_bytes / t[f"{key}_bytes"], 3)
            for key in ("artifact", "gzip", "zstd") if t.get(f"{key}_bytes")
        }
    return out

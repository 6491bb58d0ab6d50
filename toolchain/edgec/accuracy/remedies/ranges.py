"""Activation range choice for TFLite int8: min/max (the converter's), percentile, or MSE-optimal.

The converter calibrates a float model and stores each activation tensor's observed min and max
in it; its quantizer derives every scale and zero point from them. Choosing another range is
therefore an edit of those stored min/max values before quantizing, not of the finished int8 model
(whose requantization multipliers, bias scales and fused clips all follow from the ranges and
would each have to be recomputed). The statistics are gathered by running the calibrated model
itself on the calibration data with LiteRT, every intermediate tensor kept, so each range is the
range of exactly the tensor the quantizer reads it for.

* ``minmax``: the observed range (what the converter does);
* ``percentile``: the 0.01 and 99.99 percentiles (outliers clip);
* ``mse``: per tensor, the clipped range (both ends scaled by the same factor, 0.30 ... 1.00 of
  min/max) whose int8 rounding-and-clipping error on the observed values is smallest.

Every range keeps 0 inside it. The model input keeps its min/max (the input range is the data's).
"""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
MAX_VALUES = 1_000_000
FACTORS = np.linspace(0.3, 1.0, 36)


def _quant_error(v: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255.0
    if scale <= 0:
        return float(np.mean(v * v))
    zero = np.round(-lo / scale)
    q = np.clip(np.round(v / scale) + zero, 0, 255)
    return float(np.mean(np.square((q - zero) * scale - v)))


def choose(values: np.ndarray, lo: float, hi: float, method: str) -> tuple[float, float]:
    """The range of one tensor by ``method`` from its observed ``values`` and min/max."""
    if method == "minmax" or values.size == 0:
        return lo, hi
    if method == "percentile":
        p_lo, p_hi = np.percentile(values, [100 - PERCENTILE, PERCENTILE])
        return float(min(p_lo, 0.0)), float(max(p_hi, 0.0))
    best = (lo, hi)
    best_err = _quant_error(values, lo, hi)
    for f in FACTORS[:-1]:
        err = _quant_error(values, lo * f, hi * f)
        if err < best_err:
            best, best_err = (lo * f, hi * f), err
    return float(best[0]), float(best[1])


def _tensor_values(calibrated: bytes, x: np.ndarray, names: set[int]) -> dict[int, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    from edgec.util import capture_native_stderr

    with capture_native_stderr():
        it = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [1, *x.shape[1:]])
    it.allocate_tensors()
    seen: dict[int, list[np.ndarray]] = {i: [] for i in names}
    rng = np.random.default_rng(0)
    for sample in x:
        it.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        it.invoke()
        for i in names:
            v = it.get_tensor(i).ravel()
            seen[i].append(v)
    out = {}
    for i, parts in seen.items():
        v = np.concatenate(parts).astype(np.float32)
        if v.size > MAX_VALUES:
            v = rng.choice(v, MAX_VALUES, replace=False)
        out[i] = v
    return out


def apply(calibrated: bytes, x: np.ndarray, method: str) -> tuple[bytes, dict]:
    """The calibrated model with its activation min/max chosen by ``method``, and a summary.

    Raises:
        ValueError: an unknown method.
    """
    import flatbuffers

    from edgec.tflite_model import schema_module

    if method not in METHODS:
        raise ValueError(method)
    if method == "minmax":
        return calibrated, {"method": method, "tensors": 0, "clipped": 0}
    schema = schema_module()
    m = schema.ModelT.InitFromPackedBuf(calibrated, 0)
    sub = m.subgraphs[0]
    inputs = set(int(i) for i in sub.inputs)
    chosen = {}
    for i, t in enumerate(sub.tensors):
        q = t.quantization
        if i in inputs or q is None or q.min is None or q.max is None or len(q.min) != 1:
            continue
        chosen[i] = (float(q.min[0]), float(q.max[0]))
    values = _tensor_values(calibrated, np.asarray(x, np.float32), set(chosen))
    clipped = 0
    shrink = []
    for i, (lo, hi) in chosen.items():
        new_lo, new_hi = choose(values[i], lo, hi, method)
        q = sub.tensors[i].quantization
        q.min, q.max = [new_lo], [new_hi]
        if (new_lo, new_hi) != (lo, hi):
            clipped += 1
            shrink.append((new_hi - new_lo) / (hi - lo) if hi > lo else 1.0)
    builder = flatbuffers.Builder(len(calibrated) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), {"method": method, "tensors": len(chosen), "clipped": clipped,
                                     "median_range_kept": round(float(np.median(shrink)), 4) if shrink else 1.0}

"""ONNX for TensorRT on digits: accuracy of each Q/DQ recipe, the ORT kernel effect, sizes, latency.

Prints one table per run (all figures measured in the same run):
  * float: tf2onnx export under ONNX Runtime, and its max abs difference to Keras;
  * ort-asym: ONNX Runtime's quantize_static defaults (QDQ, per-channel, asymmetric activations);
  * ort-sym: the same with ActivationSymmetric=True (ORT's own placement: Q/DQ on every Conv output,
    ReLU kept behind it), run with ORT's default CPU kernels and with the exact int8 mode
    (session.x64quantprecision=1);
  * edgec: the TensorRT layout edgec writes (symmetric, zero point 0, per-channel weights, no Q/DQ
    on Conv/Gemm/Add outputs), default kernels and exact mode;
and ONNX sizes and ORT CPU latency (batch 1) of the float and the edgec int8 model.

    python bench/bench_onnx.py [--epochs 15] [--archs cnn residual separable]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import edgec  # noqa: E402,F401


def _session(model_bytes: bytes, exact: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    if exact:
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _acc(model_bytes: bytes, x, y, exact: bool) -> float:
    s = _session(model_bytes, exact)
    out = s.run(None, {s.get_inputs()[0].name: x})[0]
    return float((out.argmax(1) == y).mean()) * 100


def _latency_us(model_bytes: bytes, x, runs: int = 300) -> float:
    s = _session(model_bytes, exact=True)
    name = s.get_inputs()[0].name
    for i in range(30):
        s.run(None, {name: x[i:i + 1]})
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        s.run(None, {name: x[i % len(x):i % len(x) + 1]})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _ort_recipe(pre, calib, symmetric: bool) -> bytes:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{pre.graph.input[0].name: calib[i:i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(pre, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
        return dst.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--archs", nargs="+", default=["cnn", "residual", "separable"])
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()

    from edgec.examples import digits, make_model, train
    from edgec.targets.tensorrt import export, onnx_io, quantize

    split = digits(0)
    x, y, calib = split.x_test, split.y_test, split.x_train[:200]
    rows = []
    for arch in args.archs:
        model = make_model(arch)
        keras_acc = train(model, split, epochs=args.epochs, seed=0) * 100
        proto = export.export_onnx(model, args.opset)
        float_bytes = proto.SerializeToString()
        diff = float(np.abs(np.asarray(model(x, training=False)) - onnx_io.OrtRunner(float_bytes)(x)[0]).max())
        pre = quantize.prepare_for_quantization(proto)
        asym = _ort_recipe(pre, calib, symmetric=False)
        sym = _ort_recipe(pre, calib, symmetric=True)
        ours = quantize.quantize_qdq(pre, calib).model.SerializeToString()
        rows.append({
            "arch": arch, "keras": keras_acc, "float": _acc(float_bytes, x, y, False), "diff": diff,
            "asym": _acc(asym, x, y, False), "sym": _acc(sym, x, y, False), "sym_exact": _acc(sym, x, y, True),
            "ours": _acc(ours, x, y, False), "ours_exact": _acc(ours, x, y, True),
            "float_kib": len(float_bytes) / 1024, "int8_kib": len(ours) / 1024,
            "lat_float": _latency_us(float_bytes, x), "lat_int8": _latency_us(ours, x),
        })
    print(f"digits, {len(x)} held-out samples, {len(calib)} calibration samples, opset {args.opset}, "
          f"ONNX Runtime CPU, 1 thread, batch 1 for latency")
    head = ("arch", "keras %", "onnx fp32 %", "max|diff|", "ort-asym %", "ort-sym %", "ort-sym exact %",
            "edgec %", "edgec exact %", "fp32 KiB", "int8 KiB", "fp32 us", "int8 us", "int8/fp32")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([
            r["arch"], f"{r['keras']:.2f}", f"{r['float']:.2f}", f"{r['diff']:.1e}", f"{r['asym']:.2f}",
            f"{r['sym']:.2f}", f"{r['sym_exact']:.2f}", f"{r['ours']:.2f}", f"{r['ours_exact']:.2f}",
            f"{r['float_kib']:.1f}", f"{r['int8_kib']:.1f}", f"{r['lat_float']:.0f}", f"{r['lat_int8']:.0f}",
            f"{r['lat_int8'] / r['lat_float']:.2f}"]))


if __name__ == "__main__":
    main()

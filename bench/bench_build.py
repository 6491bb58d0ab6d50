"""Conversion overhead of `edgec build` and LiteRT fp32 vs int8 latency, measured in one run.

For each model (the digits CNN and keras.applications MobileNetV2, weights=None, 224x224):

* wall time of `edgec build --precision int8` (a subprocess, as a user runs it) against a bare
  TFLiteConverter script doing the same int8 conversion (also a subprocess), and their ratio;
* LiteRT median latency of the fp32 and int8 artifacts with 1 and 2 threads, and the ratio.

Usage: python bench/bench_build.py [--runs 50] [--calib-samples 100] [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BARE = textwrap.dedent("""
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf, tf_keras as keras
    model = keras.models.load_model(sys.argv[1], compile=False)
    x = np.load(sys.argv[2])["x"][: int(sys.argv[4])].astype("float32")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    open(sys.argv[3], "wb").write(conv.convert())
""")


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def latency_ms(path: Path, threads: int, runs: int, warmup: int | None = None) -> float:
    """LiteRT median latency (ms) of one batch-1 inference on random inputs, after ``warmup``
    invokes (default: a tenth of ``runs``, at least 3)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    shape = [1, *inp["shape"][1:]]
    if list(inp["shape"]) != shape:
        it.resize_tensor_input(inp["index"], shape)
        it.allocate_tensors()
    dtype = np.dtype(inp["dtype"])
    rng = np.random.default_rng(0)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    else:
        x = rng.random(shape, dtype=np.float32)
    it.set_tensor(inp["index"], x)
    for _ in range(max(3, runs // 10) if warmup is None else warmup):
        it.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calib-samples", type=int, default=100)
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()

    import edgec  # noqa: F401
    from edgec.examples import digits, make_model, train
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    work = Path(tempfile.mkdtemp(prefix="edgec-bench-"))
    models = []
    split = digits()
    cnn = make_model("cnn")
    train(cnn, split, epochs=10)
    cnn.save(work / "digits_cnn.keras")
    np.savez(work / "digits_calib.npz", x=split.x_train)
    models.append(("digits CNN", work / "digits_cnn.keras", work / "digits_calib.npz"))
    if not args.skip_mobilenet:
        mnv2 = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        mnv2.save(work / "mobilenetv2.keras")
        rng = np.random.default_rng(0)
        np.savez(work / "mnv2_calib.npz", x=rng.random((args.calib_samples, 224, 224, 3), dtype=np.float32))
        models.append(("MobileNetV2 224", work / "mobilenetv2.keras", work / "mnv2_calib.npz"))

    edgec_cmd = [sys.executable, "-m", "edgec"]
    rows = []
    for name, model, calib in models:
        out = work / f"dist-{model.stem}"
        t_edgec = timed([*edgec_cmd, "build", str(model), "--target", "x86-cpu", "--precision", "int8",
                         "--calib", str(calib), "--calib-samples", str(args.calib_samples), "--out", str(out)])
        bare_path = work / f"{model.stem}-bare.tflite"
        t_bare = timed([sys.executable, "-c", BARE, str(model), str(calib), str(bare_path), str(args.calib_samples)])
        timed([*edgec_cmd, "build", str(model), "--target", "x86-cpu", "--precision", "fp32", "--out", str(out / "fp32")])
        int8_path, fp32_path = out / "x86-cpu" / "model.tflite", out / "fp32" / "x86-cpu" / "model.tflite"
        lat = {(p, t): latency_ms(path, t, args.runs)
               for p, path in (("fp32", fp32_path), ("int8", int8_path)) for t in (1, 2)}
        rows.append((name, t_edgec, t_bare, lat, fp32_path.stat().st_size, int8_path.stat().st_size))

    print(f"\nconversion wall time, int8, {args.calib_samples} calibration samples (subprocess, incl. imports)")
    print(f"{'model':<18}{'edgec build s':>15}{'bare script s':>15}{'ratio':>8}")
    for name, t_e, t_b, *_ in rows:
        print(f"{name:<18}{t_e:>15.2f}{t_b:>15.2f}{t_e / t_b:>8.2f}")
    print(f"\nLiteRT median latency, batch 1, {args.runs} runs (ms); ratio = fp32 / int8 (>1: int8 faster)")
    print(f"{'model':<18}{'threads':>8}{'fp32 ms':>10}{'int8 ms':>10}{'ratio':>8}{'fp32 KiB':>10}{'int8 KiB':>10}")
    for name, _, _, lat, s32, s8 in rows:
        for t in (1, 2):
            print(f"{name:<18}{t:>8}{lat[('fp32', t)]:>10.3f}{lat[('int8', t)]:>10.3f}"
                  f"{lat[('fp32', t)] / lat[('int8', t)]:>8.2f}{s32 / 1024:>10.1f}{s8 / 1024:>10.1f}")
    print(f"\nhost: {os.cpu_count()} cores; work dir {work}")


if __name__ == "__main__":
    main()

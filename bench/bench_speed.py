"""Compression that cuts the work: MACs, parameters, size, accuracy and LiteRT latency per method.

For each model it trains the float model on the bundled digits, then runs the compression steps
of `edgec build` (edgec.optimize, fine-tuned on the training split, distilled from the float
model) and converts each result to fp32 and int8 (post-training, calibrated on 200 training
inputs) .tflite files:

* float            the trained model (the baseline)
* channels         --prune-channels 0.5
* low-rank         --low-rank R (R per model, see LOW_RANK)
* channels+low-rank  both, in that order
* channels+qat     --prune-channels 0.5 --qat (int8 only: QAT ends in an int8 artifact)
* sparse           --sparse-inference (MobileNetV2-style net only; fp32 and fp16, dense twins of
                   the same pruned weights measured next to the sparse ones)

Models: `resnet` (ResNet-style, 40x40 digits, over 2 ms fp32), the `residual` and `separable`
examples (8x8 digits), `mlp` (Dense-heavy) and `mobilenet` (MobileNetV2-style, 32x32 RGB, the
layout XNNPACK's sparse inference needs). All artifacts of a model are timed side by side in
one run: LiteRT (XNNPACK) with 1 and 2 threads, batch 1, in interleaved rounds; the latency is
the median over rounds of each round's median, and ratios are against the float model at the
same precision and thread count (for sparse rows: against the dense twin).

Usage: python bench/bench_speed.py [--arch resnet residual ...] [--variant channels ...]
                                   [--epochs 20] [--rounds 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EDGEC_PROGRESS", "0")

ARCHS = ("resnet", "residual", "separable", "mlp", "mobilenet")
TRAIN_EPOCHS = {"resnet": 15, "residual": 40, "separable": 40, "mlp": 40, "mobilenet": 15}
LOW_RANK = {"mlp": 0.2}  # rank fraction per model; others: DEFAULT_LOW_RANK
DEFAULT_LOW_RANK = 0.5
VARIANTS = ("float", "channels", "low-rank", "channels+low-rank", "channels+qat", "sparse")
THREADS = (1, 2)


def options_for(variant: str, arch: str) -> dict | None:
    rank = LOW_RANK.get(arch, DEFAULT_LOW_RANK)
    return {
        "float": {},
        "channels": {"prune_channels": 0.5},
        "low-rank": {"low_rank": rank},
        "channels+low-rank": {"prune_channels": 0.5, "low_rank": rank},
        "channels+qat": {"prune_channels": 0.5, "qat": True},
        "sparse": {"sparse_inference": True} if arch == "mobilenet" else None,
    }[variant]


def log(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def accuracy(content: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from edgec.targets.tflite import LiteRTRunner

    out = LiteRTRunner(content, threads=1)(x)[0]
    return float((out.argmax(axis=1) == y).mean())


def latencies(contents: dict[str, bytes], threads: int, rounds: int, invokes: int) -> dict[str, float]:
    """Median over ``rounds`` of each round's median invoke time (ms), all models interleaved."""
    from ai_edge_litert.interpreter import Interpreter

    from edgec.util import capture_native_stderr

    interpreters = {}
    with capture_native_stderr():
        for name, content in contents.items():
            it = Interpreter(model_content=content, num_threads=threads)
            it.allocate_tensors()
            d = it.get_input_details()[0]
            sample = np.random.default_rng(0).random(d["shape"]).astype(np.float32)
            if np.dtype(d["dtype"]).kind in "iu":
                scale, zero = d["quantization"]
                sample = np.clip(np.round(sample / scale + zero), -128, 127).astype(d["dtype"])
            it.set_tensor(d["index"], sample)
            for _ in range(max(10, invokes // 4)):  # warm-up: XNNPACK packs weights on the first runs
                it.invoke()
            interpreters[name] = it
    per_round: dict[str, list[float]] = {name: [] for name in contents}
    for _ in range(rounds):
        for name, it in interpreters.items():
            times = []
            for _ in range(invokes):
                t0 = time.perf_counter()
                it.invoke()
                times.append(time.perf_counter() - t0)
            per_round[name].append(float(np.median(times)) * 1e3)
    return {name: float(np.median(v)) for name, v in per_round.items()}


def run_arch(arch: str, args) -> list[dict]:
    from edgec import profiles, targets
    from edgec.calibration import Dataset
    from edgec.config import BuildOptions, Precision
    from edgec.errors import EdgecError
    from edgec.examples import arch_shape, digits, make_model, train
    from edgec.optimize import graph, optimize, resolve
    from edgec.targets.tflite import convert

    split = digits(0, shape=arch_shape(arch))
    model = make_model(arch)
    t0 = time.perf_counter()
    float_acc = train(model, split, epochs=args.train_epochs or TRAIN_EPOCHS[arch], seed=0)
    graph.recalibrate_batchnorm(model, split.x_train)
    log(f"{arch}: trained in {time.perf_counter() - t0:.0f} s, Keras float accuracy {float_acc * 100:.2f} %")
    fine = Dataset(x=split.x_train, y=split.y_train, source="digits train", total=len(split.x_train))
    evald = Dataset(x=split.x_test, y=split.y_test, source="digits test", total=len(split.x_test))
    calib = Dataset(x=split.x_train[:200], y=None, source="digits train[:200]", total=200)
    base = graph.totals(model)
    rows, contents = [], {}

    def add(variant: str, precision: str, content: bytes, totals: dict, seconds: float, note: str = "") -> None:
        key = f"{variant}/{precision}"
        contents[key] = content
        rows.append({"arch": arch, "variant": variant, "precision": precision, "params": totals["params"],
                     "macs": totals["macs"], "bytes": len(content), "seconds": round(seconds, 1),
                     "accuracy": accuracy(content, split.x_test, split.y_test), "note": note, "key": key})

    for variant in args.variant:
        options = options_for(variant, arch)
        if options is None:
            continue
        t0 = time.perf_counter()
        if not options:
            add(variant, "fp32", convert(model, Precision.FP32), base, 0.0)
            add(variant, "int8", convert(model, Precision.INT8, calib=calib), base, 0.0)
            continue
        precision = Precision.INT8 if options.get("qat") else Precision.FP32
        build_options = BuildOptions(fine_tune="digits train", epochs=args.epochs, lr=args.lr,
                                     distill=args.distill, seed=0, **options)
        try:
            spec = resolve(build_options, precision)
            result = optimize(model, fine, spec, target=targets.get("tflite"), profile=profiles.get("rpi5"),
                              eval_data=evald)
        except EdgecError as exc:
            log(f"{arch} {variant}: {exc}")
            rows.append({"arch": arch, "variant": variant, "error": str(exc)})
            continue
        seconds = time.perf_counter() - t0
        totals = {k: result.structure[k]["after"] for k in ("params", "macs")}
        log(f"{arch} {variant}: optimized in {seconds:.0f} s, Keras accuracy "
            + ", ".join(f"{s['step']} {s['accuracy'] * 100:.2f} %" for s in result.steps))
        if spec.qat:
            add(variant, "int8", convert(result.model, Precision.INT8, calib=calib), totals, seconds)
        elif spec.sparse_inference:
            for precision_ in (Precision.FP32, Precision.FP16):
                add("sparse (stored dense)", precision_.value, convert(result.model, precision_), totals, seconds,
                    "same pruned weights, dense kernels")
                add(variant, precision_.value, convert(result.model, precision_, sparsity=True), totals, seconds,
                    "EXPERIMENTAL_SPARSITY: DENSIFY + XNNPACK sparse path")
            add("float", "fp16", convert(model, Precision.FP16), base, 0.0)
        else:
            add(variant, "fp32", convert(result.model, Precision.FP32), totals, seconds)
            add(variant, "int8", convert(result.model, Precision.INT8, calib=calib), totals, seconds)

    for threads in THREADS:
        measured = latencies(contents, threads, args.rounds, args.invokes)
        for row in rows:
            if "key" in row:
                row[f"ms_{threads}t"] = measured[row["key"]]
    by_key = {r["key"]: r for r in rows if "key" in r}
    float_acc_fp32 = by_key["float/fp32"]["accuracy"] if "float/fp32" in by_key else None
    for row in rows:
        if "key" not in row:
            continue
        ref = by_key.get(f"float/{row['precision']}")
        if row["variant"] == "sparse":
            ref = by_key.get(f"sparse (stored dense)/{row['precision']}")
        for threads in THREADS:
            row[f"speedup_{threads}t"] = (ref[f"ms_{threads}t"] / row[f"ms_{threads}t"]) if ref else None
        row["macs_ratio"] = row["macs"] / base["macs"]
        row["params_ratio"] = row["params"] / base["params"]
        row["drop"] = (float_acc_fp32 - row["accuracy"]) * 100 if float_acc_fp32 is not None else None
    return rows


def fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], args) -> None:
    print(f"\nLiteRT (XNNPACK), batch 1, this machine; {args.rounds} interleaved rounds of {args.invokes} invokes, "
          f"median of round medians; fine-tune: {args.epochs} epochs, lr {args.lr:g}, "
          f"{'distilled from the float model, ' if args.distill else ''}early stopping on 10 % held out; "
          "int8: post-training, 200 calibration inputs (channels+qat: QAT); accuracy on 540 held-out digits "
          "(1 sample = 0.19 pt), drop against the float fp32 artifact; speed-up = float latency / this latency "
          "at the same precision and threads (sparse: against the same weights stored dense)\n")
    header = ("| model | variant | precision | MACs | MACs vs float | params | params vs float | bytes | accuracy | "
              "drop (pt) | 1 thread ms | speed-up | 2 threads ms | speed-up |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for r in rows:
        if "error" in r:
            print(f"| {r['arch']} | {r['variant']} | error: {r['error']} |")
            continue
        print(f"| {r['arch']} | {r['variant']} | {r['precision']} | {r['macs']:,} | {r['macs_ratio']:.2f} | "
              f"{r['params']:,} | {r['params_ratio']:.2f} | {r['bytes']:,} | {r['accuracy'] * 100:.2f} | "
              f"{fmt(r['drop'], '.2f')} | {r['ms_1t']:.3f} | {fmt(r['speedup_1t'], '.2f')}x | {r['ms_2t']:.3f} | "
              f"{fmt(r['speedup_2t'], '.2f')}x |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--variant", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs per step (early stopping applies)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-distill", dest="distill", action="store_false")
    parser.add_argument("--train-epochs", type=int, help="epochs to train each float model (default: per model)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--invokes", type=int, default=40)
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if "float" not in args.variant:
        args.variant = ["float", *args.variant]

    import edgec  # noqa: F401  (sets the Keras environment)
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    tf.config.experimental.enable_op_determinism()
    rows = []
    for arch in args.arch:
        rows += run_arch(arch, args)
        print_table([r for r in rows if r["arch"] == arch], args)
    print_table(rows, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2, default=float)


if __name__ == "__main__":
    main()

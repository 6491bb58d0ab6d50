"""Compression in `edgec build`, measured: accuracy, sparsity, shared values and sizes per method.

For each architecture in edgec.examples (the digits CNN, the residual net with Add, the
depthwise-separable net) and a CNN whose layers TF-MOT cannot annotate (Rescaling, UpSampling2D,
Lambda), it trains the float model, then runs `edgec.build(...)` for rpi5 (int8) with:

* ptq            post-training int8 (--calib), the reference without fine-tuning
* qat            --qat
* prune+qat      --prune 0.8 --qat
* cluster+qat    --cluster 16 --qat
* 2:4+qat        --prune-structure 2:4 --qat
* prune+cluster+qat  --prune 0.8 --cluster 16 --qat

and prints one row per build, everything read from the artifact (edgec.inspection): float and
artifact accuracy on the held-out digits, the drop, the share of zeros in all Conv/Dense kernels
and in the kernels TF-MOT pruned, the most unique values per output channel and per kernel,
the least share of 2:4-compliant groups, the float .tflite / int8 / gzip / zstd bytes and the
compression rate (float .tflite bytes / artifact zstd bytes).

Usage: python bench/bench_compression.py [--epochs 30] [--lr LR] [--arch cnn residual ...]
                                         [--method qat prune+qat ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEC_PROGRESS", "0")

METHODS = {
    "ptq": {},
    "qat": {"qat": True},
    "prune+qat": {"prune": 0.8, "qat": True},
    "cluster+qat": {"cluster": 16, "qat": True},
    "2:4+qat": {"prune_structure": "2:4", "qat": True},
    "prune+cluster+qat": {"prune": 0.8, "cluster": 16, "qat": True},
}
ARCHS = ("cnn", "residual", "separable", "unfriendly")


def unfriendly_model():
    """A digits CNN with layers TF-MOT's QAT cannot annotate (Rescaling, Lambda) or must handle
    specially (UpSampling2D)."""
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    layers = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inp)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.UpSampling2D(2, name="upsample")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Lambda(lambda t: t * 0.5, name="halve")(x)  # no closure: .h5 saving deep-copies it
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name="digits_unfriendly")


def train_models(archs, work: Path, epochs: int) -> dict[str, Path]:
    from edgec.examples import digits, make_model, train

    split = digits(seed=0)
    np.savez(work / "train.npz", x=split.x_train, y=split.y_train)
    np.savez(work / "calib.npz", x=split.x_train)
    np.savez(work / "eval.npz", x=split.x_test, y=split.y_test)
    paths = {}
    for arch in archs:
        model = unfriendly_model() if arch == "unfriendly" else make_model(arch)
        acc = train(model, split, epochs=epochs, seed=0)
        # Lambda layers load from .h5 without a trust decision; .keras needs safe_mode=False
        paths[arch] = work / (f"{arch}.h5" if arch == "unfriendly" else f"{arch}.keras")
        model.save(paths[arch])
        print(f"# trained {arch}: float accuracy {acc * 100:.2f} %, {model.count_params():,} parameters",
              file=sys.stderr, flush=True)
    return paths


def measure(path: Path, method: str, work: Path, epochs: int, lr: float | None, seed: int = 0) -> dict:
    import edgec
    from edgec.errors import EdgecError

    kwargs = dict(METHODS[method])
    if kwargs:
        kwargs.update(fine_tune=str(work / "train.npz"), epochs=epochs, lr=lr, seed=seed)
    else:
        kwargs.update(calib=str(work / "calib.npz"))
    t0 = time.perf_counter()
    try:
        result = edgec.build(path, target="rpi5", precision="int8", eval=str(work / "eval.npz"),
                             out=work / "dist" / f"{path.stem}-{method}-{seed}", **kwargs)
    except EdgecError as exc:
        return {"method": method, "error": str(exc)}
    seconds = time.perf_counter() - t0
    m = result.manifest
    v = m["verification"]
    o = m.get("optimization") or {}
    from edgec.inspection import inspect_tflite
    from edgec.targets.tflite import convert
    from edgec.tfcompat import tf_and_keras

    art = result.out_dir / m["artifacts"][0]["file"]
    rep = inspect_tflite(art)
    kernels = [r for r in rep["ops"] if r["zero_share"] is not None and r["op"] in
               ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    total = sum(np.prod(r["weight_shape"]) for r in kernels)
    zeros = sum(r["zero_share"] * np.prod(r["weight_shape"]) for r in kernels)
    pruned_layers = set()
    for step in o.get("step_details", []):
        if step["step"] == "prune":
            pruned_layers = {e["layer"] for e in step["layers"] if e.get("pruned")}
    rows = [r for r in o.get("layers", []) if r["layer"] in pruned_layers]
    pruned_zero = (sum(r["zero_share"] * r["params"] for r in rows) / sum(r["params"] for r in rows)) if rows else None
    if o.get("float_tflite"):
        float_bytes = o["float_tflite"]["bytes"]
    else:
        _, keras = tf_and_keras()
        from edgec.config import Precision

        float_bytes = len(convert(keras.models.load_model(path, compile=False), Precision.FP32))
    structured = [r["sparsity_2_4"] for r in rep["ops"] if r.get("sparsity_2_4") is not None]
    float_layers = []
    for step in o.get("step_details", []):
        if step["step"] == "qat":
            float_layers = [e["layer"] for e in step["float_layers"]]
    t = rep["totals"]
    return {
        "method": method,
        "float_acc": v["float_accuracy"], "artifact_acc": v["artifact_accuracy"], "drop": v["accuracy_drop_points"],
        "zero_share": float(zeros / total), "pruned_zero_share": pruned_zero,
        "unique_per_channel": max(r["unique_values"] for r in kernels),
        "unique_per_kernel": max(r["unique_values_tensor"] for r in kernels),
        "unique_per_kernel_dense": max((r["unique_values_tensor"] for r in kernels if r["op"] == "FULLY_CONNECTED"),
                                       default=None),
        "sparsity_2_4_min": min(structured) if structured else None,
        "float_bytes": float_bytes, "int8_bytes": t["file_bytes"], "gzip_bytes": t["gzip_bytes"],
        "zstd_bytes": t.get("zstd_bytes"), "rate_zstd": float_bytes / t["zstd_bytes"] if t.get("zstd_bytes") else None,
        "float_in_training": float_layers, "seconds": seconds,
        "epochs_run": {s["step"]: s["fine_tune"]["epochs_run"] for s in o.get("step_details", []) if "fine_tune" in s},
    }


def fmt(value, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs per step (early stopping applies)")
    parser.add_argument("--lr", type=float, default=None,
                        help="fine-tune learning rate (default: the build's, 1e-3, or 1e-4 for QAT alone)")
    parser.add_argument("--train-epochs", type=int, default=40, help="epochs to train each float model")
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--method", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="fine-tuning seeds; the drop is shown as mean (min..max) over them")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    import edgec  # noqa: F401  (sets the Keras environment)

    results = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-compression-") as tmp:
        work = Path(tmp)
        paths = train_models(args.arch, work, args.train_epochs)
        for arch in args.arch:
            methods = args.method if arch != "unfriendly" else [m for m in args.method if m in ("ptq", "qat")]
            for method in methods:
                runs = []
                for seed in (args.seeds if method != "ptq" else args.seeds[:1]):  # PTQ has no randomness
                    run = {"arch": arch, "seed": seed, **measure(paths[arch], method, work, args.epochs, args.lr, seed)}
                    runs.append(run)
                    print(f"# {arch} {method} seed {seed}: " + (run.get("error") or
                          f"drop {run['drop']:.2f} pt, zeros {run['zero_share'] * 100:.1f} %, {run['seconds']:.0f} s"),
                          file=sys.stderr, flush=True)
                ok = [r for r in runs if "error" not in r]
                row = dict(ok[0] if ok else runs[0])
                if ok:
                    drops = [r["drop"] for r in ok]
                    row.update(drop=float(np.mean(drops)), drop_min=min(drops), drop_max=max(drops),
                               artifact_acc=float(np.mean([r["artifact_acc"] for r in ok])), runs=runs)
                results.append(row)

    print(f"\nedgec build --target rpi5 --precision int8, fine-tune: --epochs {args.epochs} "
          f"--lr {format(args.lr, 'g') if args.lr else 'default (1e-3; 1e-4 for QAT alone)'} "
          f"(early stopping on a 10 % held-out slice), seeds {' '.join(map(str, args.seeds))}; eval: 540 held-out "
          "digits (1 sample = 0.19 pt); artifact acc and drop: mean over the seeds, drop range in brackets; "
          "sizes and counts: first seed\n")
    header = ("| arch | method | float acc | artifact acc | drop (pt) | zeros all kernels | zeros pruned kernels | "
              "unique/ch max | unique/kernel max (Dense) | 2:4 groups min | float .tflite B | int8 B | gzip B | zstd B | "
              "float/zstd | build s |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for r in results:
        if "error" in r:
            print(f"| {r['arch']} | {r['method']} | error: {r['error']} |")
            continue
        uk = f"{r['unique_per_kernel']} ({fmt(r['unique_per_kernel_dense'])})"
        spread = f" ({r['drop_min']:.2f}..{r['drop_max']:.2f})" if r.get("drop_min") != r.get("drop_max") else ""
        print(f"| {r['arch']} | {r['method']} | {r['float_acc'] * 100:.2f} | {r['artifact_acc'] * 100:.2f} | "
              f"{r['drop']:.2f}{spread} | {r['zero_share'] * 100:.1f} % | "
              f"{fmt(r['pruned_zero_share'] * 100 if r['pruned_zero_share'] is not None else None, '.1f')} | "
              f"{r['unique_per_channel']} | {uk} | "
              f"{fmt(r['sparsity_2_4_min'] * 100 if r['sparsity_2_4_min'] is not None else None, '.1f')} | "
              f"{r['float_bytes']:,} | {r['int8_bytes']:,} | {r['gzip_bytes']:,} | {fmt(r['zstd_bytes'], ',')} | "
              f"{fmt(r['rate_zstd'], '.1f')} | {r['seconds']:.0f} |")
    for r in results:
        if r.get("float_in_training"):
            print(f"\n{r['arch']} {r['method']}: left float during QAT: {', '.join(r['float_in_training'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()

"""Accuracy-aware int8, measured: plain int8 vs `--accuracy-control` vs fp32, in one run.

For each architecture in edgec.examples (the digits CNN, the residual net with Add and BatchNorm,
the depthwise-separable net) and the digits CNN with an outlier unit (one hidden unit 200x the
others' range: the same float model, a plain int8 model that loses points), it trains the float
model, then runs `edgec.build(...)` for rpi5 three times:

* fp32        --precision fp32
* int8        --precision int8 --calib (plain post-training quantization)
* controlled  --precision int8 --calib --accuracy-control --max-accuracy-drop BUDGET --no-remedies

and prints one row per artifact: accuracy on the 540 held-out digits and the drop against the
float Keras model (one sample = 0.19 point), the ops and the share of MACs kept in float, the
artifact size, and the LiteRT median latency with batch 1 at 1 and 2 threads on this machine
(the three artifacts of a model timed in interleaved rounds, the median of the round medians;
the ratio is fp32 latency / artifact latency). A second table gives the same drop / MACs / size for
the TensorRT target (jetson-orin-nano, verified with ONNX Runtime's exact int8 on the host; its
latency belongs to the Jetson).

With --remedies it measures the integer remedies instead, on a bigger model of the class they are
for (bench/remedies_models.py: a mini-Xception, SeparableConv2D residual modules, trained on digits
upscaled to 32x32 with 30 % noisy labels, inputs in [-1, 1]) for rpi5, the metric top-1 agreement
with the float model on the 597 held-out images (one image = 0.17 point): one row each for plain
int8, every remedy alone (--equalize, --bias-correct, --range percentile, --range mse, --adaround,
--int16-activations), the chosen combination (--accuracy-control, the default) and the float
fallback alone (--accuracy-control --no-remedies): drop, integer MAC share (16-bit activations
counted apart), size, LiteRT latency (batch 1, 1 thread, the median of interleaved rounds, with
the spread of the round medians), build time; then the latency cost of each layer the chosen
build keeps in 16-bit or float.

Usage: python bench/bench_accuracy.py [--epochs 30] [--budget 1.0] [--runs 300] [--rounds 5]
                                      [--arch cnn residual separable outlier] [--skip-tensorrt]
       python bench/bench_accuracy.py --remedies [--epochs 30] [--budget 1.0] [--runs 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_build import latency_ms  # bench/ is on the path of a script run from it

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEC_PROGRESS", "0")

ARCHS = ("cnn", "residual", "separable", "outlier")
OUTLIER_RATIO = 200.0


def train_models(archs, epochs: int, work: Path):
    from edgec.examples import digits, make_model, train, with_outlier_unit

    split = digits()
    np.savez(work / "calib.npz", x=split.x_train)
    np.savez(work / "eval.npz", x=split.x_test, y=split.y_test)
    models = {}
    cnn = None
    for arch in archs:
        base = "cnn" if arch == "outlier" else arch
        if base == "cnn" and cnn is not None:
            model = cnn
        else:
            model = make_model(base)
            train(model, split, epochs=epochs)
            if base == "cnn":
                cnn = model
        if arch == "outlier":
            model = with_outlier_unit(model, split.x_train, OUTLIER_RATIO)
        path = work / f"digits_{arch}.keras"
        model.save(path)
        models[arch] = path
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--skip-tensorrt", action="store_true")
    parser.add_argument("--remedies", action="store_true", help="the integer remedies on a mini-Xception")
    args = parser.parse_args()
    if args.remedies:
        from bench_remedies import run

        run(args)
        return

    import edgec

    work = Path(tempfile.mkdtemp(prefix="edgec-bench-accuracy-"))
    models = train_models(args.arch, args.epochs, work)
    calib, eval_ = str(work / "calib.npz"), str(work / "eval.npz")
    variants = {
        "fp32": {"precision": "fp32"},
        "int8": {"precision": "int8", "calib": calib},
        "controlled": {"precision": "int8", "calib": calib, "accuracy_control": True,
                       "max_accuracy_drop": args.budget, "remedies": False},  # the float fallback alone
    }
    rows = []
    for arch, path in models.items():
        built = {}
        for name, options in variants.items():
            t0 = time.perf_counter()
            result = edgec.build(path, target="rpi5", eval=eval_, out=work / arch / name, **options)
            built[name] = (result, time.perf_counter() - t0)
        paths = {name: r.out_dir / "model.tflite" for name, (r, _) in built.items()}
        lat = {(name, t): [] for name in paths for t in (1, 2)}
        for _ in range(args.rounds):
            for t in (1, 2):
                for name, p in paths.items():
                    lat[(name, t)].append(latency_ms(p, t, args.runs, warmup=max(10, args.runs // 10)))
        med = {k: statistics.median(v) for k, v in lat.items()}
        for name, (result, seconds) in built.items():
            m = result.manifest
            v = m["verification"]
            ac = m.get("accuracy_control")
            rows.append({
                "model": arch, "artifact": name, "accuracy": v["artifact_accuracy"], "drop": v["accuracy_drop_points"],
                "float_ops": f"{len(ac['float_ops'])}/{ac['quantizable_ops']}" if ac else ("all" if name == "fp32" else "0"),
                "macs_float": ac["float_macs_share"] if ac else (1.0 if name == "fp32" else 0.0),
                "layers": ", ".join(o["layer"] for o in ac["float_ops"]) if ac else "",
                "bytes": m["artifacts"][0]["bytes"], "build_s": seconds,
                "lat1": med[(name, 1)], "lat2": med[(name, 2)],
                "ratio1": med[("fp32", 1)] / med[(name, 1)], "ratio2": med[("fp32", 2)] / med[(name, 2)],
            })

    print(f"\nrpi5 artifacts on {len(np.load(eval_)['y'])} held-out digits, budget {args.budget:g} points; "
          f"LiteRT batch 1 median of {args.rounds} interleaved rounds x {args.runs} runs on this host "
          f"({os.cpu_count()} cores); ratio = fp32 ms / artifact ms")
    head = ("model", "artifact", "accuracy", "drop pts", "float ops", "MACs float", "KiB", "1 thr ms", "x fp32",
            "2 thr ms", "x fp32", "build s", "kept float")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['model']} | {r['artifact']} | {r['accuracy'] * 100:.2f} % | {r['drop']:.2f} | {r['float_ops']} | "
              f"{r['macs_float'] * 100:.1f} % | {r['bytes'] / 1024:.1f} | {r['lat1']:.4f} | {r['ratio1']:.2f} | "
              f"{r['lat2']:.4f} | {r['ratio2']:.2f} | {r['build_s']:.1f} | {r['layers'] or '-'} |")

    if args.skip_tensorrt:
        return
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        print("\nTensorRT table skipped: tf2onnx is not installed (pip install 'edgec[onnx]')")
        return
    print(f"\njetson-orin-nano (TensorRT Q/DQ ONNX, verified with ONNX Runtime exact int8 on the host), budget "
          f"{args.budget:g} points")
    head = ("model", "artifact", "accuracy", "drop pts", "float nodes", "MACs float", "KiB", "kept float")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for arch, path in models.items():
        for name in ("int8", "controlled"):
            result = edgec.build(path, target="jetson-orin-nano", eval=eval_, out=work / arch / f"trt-{name}",
                                 **variants[name])
            m = result.manifest
            v, ac = m["verification"], m.get("accuracy_control")
            nodes = f"{len(ac['float_ops'])}/{ac['quantizable_ops']}" if ac else "0"
            print(f"| {arch} | {name} | {v['artifact_accuracy'] * 100:.2f} % | {v['accuracy_drop_points']:.2f} | "
                  f"{nodes} | "
                  f"{(ac['float_macs_share'] if ac else 0.0) * 100:.1f} % | {m['artifacts'][0]['bytes'] / 1024:.1f} | "
                  f"{', '.join(o['layer'] for o in ac['float_ops']) if ac and ac['float_ops'] else '-'} |")
    print(f"\nwork dir {work}")


if __name__ == "__main__":
    main()

"""Recovery after compression with the default fine-tuning, over fine-tuning seeds.

Trains the residual and the depthwise-separable digits nets of edgec.examples once (1,400
training and 397 eval digits: one eval sample is 0.25 pt), then runs ``edgec.build(...)`` for
rpi5 with the default fine-tuning settings (no --epochs, --lr or --distill) for each seed:

* prune 0.8 + QAT   --prune 0.8 --qat          (int8 artifact)
* channels 0.5      --prune-channels 0.5       (fp32 artifact: the drop is the recovery alone)

(and on request --prune 0.8 alone, --cluster 16 --qat, --low-rank 0.5, --low-rank 0.5 --qat, --prune-channels 0.5 --qat)
and prints, per architecture and method, the drop of the artifact's accuracy against the float
model on the 397 eval digits: min / max / mean over the seeds, with the recovery the build
recorded (loss, learning-rate schedule, best epoch).

Usage: python bench/bench_recovery.py [--seeds 0 1 2 3 4] [--arch residual separable]
                                      [--method prune+qat channels prune cluster+qat low-rank low-rank+qat
                                                channels+qat] [--json out.json]
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
    "prune+qat": {"prune": 0.8, "qat": True, "precision": "int8"},
    "channels": {"prune_channels": 0.5, "precision": "fp32"},
    # the other steps, measured on request (--method)
    "prune": {"prune": 0.8, "precision": "fp32"},
    "cluster+qat": {"cluster": 16, "qat": True, "precision": "int8"},
    "low-rank": {"low_rank": 0.5, "precision": "fp32"},
    "low-rank+qat": {"low_rank": 0.5, "qat": True, "precision": "int8"},
    "channels+qat": {"prune_channels": 0.5, "qat": True, "precision": "int8"},
}
DEFAULT_METHODS = ("prune+qat", "channels")
ARCHS = ("residual", "separable")
EVAL_SAMPLES = 397


def train_models(archs, work: Path, epochs: int) -> dict[str, Path]:
    from edgec.examples import digits, make_model, train

    split = digits(seed=0, test_size=EVAL_SAMPLES)
    np.savez(work / "train.npz", x=split.x_train, y=split.y_train)
    np.savez(work / "eval.npz", x=split.x_test, y=split.y_test)
    paths = {}
    for arch in archs:
        model = make_model(arch, seed=0)
        acc = train(model, split, epochs=epochs, seed=0)
        paths[arch] = work / f"{arch}.keras"
        model.save(paths[arch])
        print(f"# trained {arch}: float accuracy {acc * 100:.2f} %", file=sys.stderr, flush=True)
    return paths


def measure(path: Path, method: str, work: Path, seed: int) -> dict:
    import edgec

    t0 = time.perf_counter()
    result = edgec.build(path, target="rpi5", fine_tune=str(work / "train.npz"), eval=str(work / "eval.npz"),
                         seed=seed, out=work / "dist" / f"{path.stem}-{method}-{seed}", **METHODS[method])
    m = result.manifest
    v = m["verification"]
    o = m.get("optimization") or {}
    fits = [s["fine_tune"] for s in o.get("step_details", []) if "fine_tune" in s]
    return {"drop": v["accuracy_drop_points"], "float_acc": v["float_accuracy"],
            "artifact_acc": v["artifact_accuracy"], "seconds": time.perf_counter() - t0,
            "recovery": [{k: f.get(k) for k in ("loss", "lr_schedule", "epochs_run", "best_epoch")} for f in fits]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--method", nargs="+", choices=list(METHODS), default=list(DEFAULT_METHODS))
    parser.add_argument("--train-epochs", type=int, default=30, help="epochs to train each float model")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    import edgec  # noqa: F401  (sets the Keras environment)

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-recovery-") as tmp:
        work = Path(tmp)
        paths = train_models(args.arch, work, args.train_epochs)
        for arch in args.arch:
            for method in args.method:
                runs = []
                for seed in args.seeds:
                    run = measure(paths[arch], method, work, seed)
                    runs.append(run)
                    print(f"# {arch} {method} seed {seed}: drop {run['drop']:.2f} pt, {run['seconds']:.0f} s "
                          f"{run['recovery']}", file=sys.stderr, flush=True)
                drops = [r["drop"] for r in runs]
                rows.append({"arch": arch, "method": method, "float_acc": runs[0]["float_acc"], "drops": drops,
                             "min": min(drops), "max": max(drops), "mean": float(np.mean(drops)),
                             "seconds": float(np.mean([r["seconds"] for r in runs])), "runs": runs})

    print(f"\nedgec build --target rpi5, default fine-tuning; seeds {' '.join(map(str, args.seeds))}; "
          f"drop = float - artifact accuracy on {EVAL_SAMPLES} eval digits (1 sample = 0.25 pt)\n")
    print("| arch | method | float acc | drop min (pt) | drop max (pt) | drop mean (pt) | build s (mean) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['method']} | {r['float_acc'] * 100:.2f} | {r['min']:.2f} | {r['max']:.2f} | "
              f"{r['mean']:.2f} | {r['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()

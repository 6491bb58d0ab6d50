"""The figures `make demo` prints, over seeds: how much each moves with the seed, and whether the
demo's budgets hold for every one.

For each seed: train the digits CNN (python -m edgec.examples --seed S), build int8 for rpi5 with
--calib (budget 1.0 point), then --prune 0.8 --qat on the fine-tune data (budget 1.0 point, as in
`make demo`). Prints one row per seed and the min / max / mean of every column, and exits 1 when a
budget breaks for any seed.

    python bench/bench_demo_seeds.py [--seeds 0 1 2 3 4] [--epochs E] [--prune-epochs E] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import edgec
from edgec.examples import write_example


def run_seed(seed: int, out: Path, example_epochs: int, build_options: dict) -> dict:
    info = write_example(out, "cnn", epochs=example_epochs, seed=seed)
    data = {k: str(out / f"{k}.npz") for k in ("calib", "eval", "train")}
    t0 = time.perf_counter()
    ptq = edgec.build(info["model"], target="rpi5", precision="int8", calib=data["calib"], eval=data["eval"],
                      seed=seed, out=out / "dist")
    t_ptq = time.perf_counter() - t0
    t0 = time.perf_counter()
    comp = edgec.build(info["model"], target="rpi5", fine_tune=data["train"], prune=0.8, qat=True, eval=data["eval"],
                       seed=seed, out=out / "dist-compressed", **build_options)
    t_comp = time.perf_counter() - t0
    v, c = ptq.verification, comp.verification
    o = comp.manifest["optimization"]
    steps = {s["step"]: s for s in o["step_details"]}
    return {
        "seed": seed,
        "float_acc": v["float_accuracy"] * 100,
        "int8_acc": v["artifact_accuracy"] * 100,
        "int8_drop": v["accuracy_drop_points"],
        "int8_agree": v["agreement"] * 100,
        "int8_kib": ptq.manifest["artifacts"][0]["bytes"] / 1024,
        "pruned_acc": steps["prune"]["accuracy"] * 100,
        "qat_drop": c["accuracy_drop_points"],
        "zeros_pct": o["totals"]["kernel_zero_share"] * 100,
        "comp_kib": o["totals"]["artifact_bytes"] / 1024,
        "zstd_kib": o["totals"]["zstd_bytes"] / 1024,
        "zstd_rate": o["totals"]["compression_rate"]["zstd"],
        "ptq_s": t_ptq,
        "comp_s": t_comp,
        "sha256_int8": ptq.manifest["artifacts"][0]["sha256"][:12],
        "sha256_comp": comp.manifest["artifacts"][0]["sha256"][:12],
    }


COLUMNS = [("seed", "{}"), ("float_acc", "{:.2f}"), ("int8_acc", "{:.2f}"), ("int8_drop", "{:.2f}"),
           ("int8_agree", "{:.2f}"), ("int8_kib", "{:.1f}"), ("pruned_acc", "{:.2f}"), ("qat_drop", "{:.2f}"),
           ("zeros_pct", "{:.1f}"), ("comp_kib", "{:.1f}"), ("zstd_kib", "{:.1f}"), ("zstd_rate", "{:.1f}"),
           ("ptq_s", "{:.1f}"), ("comp_s", "{:.1f}"), ("sha256_int8", "{}"), ("sha256_comp", "{}")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--example-epochs", type=int, default=30, help="training epochs of the example CNN")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tune epochs per step (default: edgec's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    options = {"epochs": args.epochs} if args.epochs else {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgec-seeds-") as tmp:
        for seed in args.seeds:
            rows.append(run_seed(seed, Path(tmp) / f"s{seed}", args.example_epochs, options))
            print(" ".join(f"{k}={fmt.format(rows[-1][k])}" for k, fmt in COLUMNS), flush=True)
    print()
    print("| " + " | ".join(k for k, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(fmt.format(r[k]) for k, fmt in COLUMNS) + " |")
    numeric = [(k, fmt) for k, fmt in COLUMNS if isinstance(rows[0][k], float)]
    for name, fn in (("min", min), ("max", max), ("mean", statistics.fmean)):
        print(f"| {name} | " + " | ".join(fmt.format(fn(r[k] for r in rows)) for k, fmt in numeric[0:]) + " | | |")
    worst = max(r["qat_drop"] for r in rows)
    worst_ptq = max(r["int8_drop"] for r in rows)
    print(f"\nworst int8 drop {worst_ptq:.2f} points (budget 1.0), worst --prune 0.8 --qat drop {worst:.2f} points "
          f"(budget 1.0, as in make demo)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if worst <= 1.0 and worst_ptq <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())

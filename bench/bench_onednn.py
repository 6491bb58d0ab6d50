"""What turning oneDNN off costs a fine-tuning build: the same `edgec build --prune 0.5 --qat`
with TF_ENABLE_ONEDNN_OPTS=1 and =0, alternating, in fresh processes (TensorFlow reads the
variable once, when it loads).

edgec turns oneDNN off in its processes (TensorFlow 2.21's oneDNN batch matmul corrupts the heap on
broadcast batch dimensions; see tests/test_onednn.py); training is where that costs time. The table gives the median build and fine-tuning (optimize) seconds
over the runs of each setting, their spread (min-max) and the off/on ratio, per architecture.

Usage: python bench/bench_onednn.py [--arch separable resnet] [--epochs 3] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEC_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]


def prepare(arch: str, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "edgec.examples", "--arch", arch, "--epochs", "5", "--out", str(out)],
                   check=True, capture_output=True)
    return out / f"digits_{arch}.keras"


def build(model: Path, data: Path, onednn: str, epochs: int, out: Path) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    env.pop("EDGEC_ONEDNN_OFF", None)
    proc = subprocess.run([sys.executable, "-m", "edgec", "build", str(model), "--target", "rpi5", "--precision",
                           "int8", "--prune", "0.5", "--qat", "--fine-tune", str(data / "train.npz"), "--epochs",
                           str(epochs), "--out", str(out), "--json"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"build failed (oneDNN {onednn}, exit {proc.returncode}): {proc.stderr[-800:]}")
    manifest = json.loads(proc.stdout)
    assert manifest["reproducibility"]["onednn"] is (onednn == "1"), manifest["reproducibility"]
    timings = manifest["timings_s"]
    return {"optimize": timings["optimize"], "total": sum(timings.values())}


def table(rows: list[dict]) -> str:
    """The printed table: median seconds (min-max) per setting and the off/on ratio of medians."""
    lines = [f"{'arch':<10} {'step':<9} {'oneDNN on s (min-max)':>26} {'oneDNN off s (min-max)':>26} {'off/on':>7}"]
    for row in rows:
        for key in ("optimize", "total"):
            on, off = row[f"{key}_on"], row[f"{key}_off"]
            lines.append(f"{row['arch']:<10} {key:<9} {on['median']:>9.1f} ({on['min']:.1f}-{on['max']:.1f})"
                         f"{'':>6} {off['median']:>9.1f} ({off['min']:.1f}-{off['max']:.1f}){'':>6} "
                         f"{row[f'{key}_ratio_off_on']:>7.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["separable", "resnet"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-onednn-") as tmp:
        for arch in args.arch:
            data = Path(tmp) / arch
            model = prepare(arch, data)
            runs: dict[str, list[dict]] = {"1": [], "0": []}
            for i in range(args.runs):  # alternating, so a busy machine weighs on both alike
                for onednn in ("1", "0"):
                    runs[onednn].append(build(model, data, onednn, args.epochs, Path(tmp) / f"out-{arch}-{i}-{onednn}"))
            row = {"arch": arch, "epochs": args.epochs, "runs": args.runs}
            for key in ("optimize", "total"):
                for onednn, label in (("1", "on"), ("0", "off")):
                    values = [r[key] for r in runs[onednn]]
                    row[f"{key}_{label}"] = {"median": statistics.median(values), "min": min(values),
                                             "max": max(values)}
                row[f"{key}_ratio_off_on"] = round(row[f"{key}_off"]["median"] / row[f"{key}_on"]["median"], 3)
            rows.append(row)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

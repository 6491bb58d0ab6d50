"""`edgec ci` against a loop of `edgec build`s, and a cached rerun against the first run, in one run.

One model (the digits CNN) x four targets (rpi5, coral-usb, jetson-orin-nano, x86-cpu), int8 with
`--prune 0.8 --qat` fine-tuned on the digits training split, verified on the held-out split. Per
repetition, each a subprocess as a user runs it:

* four separate `edgec build`s (each loads the model, evaluates it and fine-tunes it again);
* `edgec ci` on a config with the same model, options and targets, with an empty cache (the
  model loaded and evaluated once, one fine-tune per QAT scheme: TF-MOT's default for three
  targets, TensorRT's for the Jetson);
* `edgec ci` again, unchanged (every row cached).

It prints the wall times and the ratios ci / sum of builds and cached rerun / first ci run, per
repetition and their min / median / max, and checks that ci wrote the same artifact bytes as
the separate builds.

Usage: python bench/bench_ci.py [--repeat 3] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TARGETS = ("rpi5", "coral-usb", "jetson-orin-nano", "x86-cpu")


def timed(cmd: list[str], cwd: Path, ok=(0,)) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env={**os.environ, "EDGEC_PROGRESS": "0"})
    elapsed = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per step (edgec's default)")
    parser.add_argument("--train-epochs", type=int, default=20, help="epochs training the float model")
    args = parser.parse_args()

    from edgec.examples import write_example

    work = Path(tempfile.mkdtemp(prefix="edgec-bench-ci-"))
    write_example(work, "cnn", epochs=args.train_epochs)
    opts = ["--fine-tune", "train.npz", "--eval", "eval.npz", "--prune", "0.8", "--qat", "--epochs", str(args.epochs)]
    config = textwrap.dedent(f"""
        [[model]]
        name = "digits"
        path = "digits_cnn.keras"
        eval = "eval.npz"
        fine-tune = "train.npz"
        prune = 0.8
        qat = true
        epochs = {args.epochs}
    """) + "".join(f'\n[[target]]\nprofile = "{t}"\nprecision = "int8"\n' for t in TARGETS)
    (work / "edgec.toml").write_text(config)
    edgec = [sys.executable, "-m", "edgec"]

    runs = []
    for rep in range(args.repeat):
        builds = {}
        for target in TARGETS:
            builds[target] = timed([*edgec, "build", "digits_cnn.keras", "--target", target, *opts,
                                    "--out", f"builds-{rep}"], work)
        cache = work / f"cache-{rep}"
        first = timed([*edgec, "ci", "--cache", str(cache), "--out", f"ci-{rep}", "--json", f"ci-{rep}.json"], work)
        cached = [timed([*edgec, "ci", "--cache", str(cache), "--out", f"ci-{rep}", "--json", f"cached-{rep}-{i}.json"],
                        work) for i in range(3)]
        doc = json.loads((work / f"cached-{rep}-0.json").read_text())
        states = {r["cache"]["state"] for r in doc["rows"]}
        same = all(
            json.loads((work / f"builds-{rep}" / t / "manifest.json").read_text())["artifacts"][0]["sha256"]
            == json.loads((work / f"ci-{rep}" / "digits" / t / "manifest.json").read_text())["artifacts"][0]["sha256"]
            for t in TARGETS)
        runs.append({"builds": builds, "sum": sum(builds.values()), "ci": first, "cached": cached,
                     "states": states, "same": same})
        r = runs[-1]
        print(f"repetition {rep + 1}: builds {', '.join(f'{t} {s:.1f} s' for t, s in builds.items())}; "
              f"sum {r['sum']:.1f} s; ci {first:.1f} s; cached reruns {', '.join(f'{c:.2f}' for c in cached)} s",
              flush=True)

    print()
    print("| repetition | 4 x edgec build (s) | edgec ci (s) | ci / builds | cached rerun (s) | cached / ci | "
          "rows cached | same bytes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios, shares = [], []
    for i, r in enumerate(runs, 1):
        ratio = r["ci"] / r["sum"]
        share = statistics.median(r["cached"]) / r["ci"]
        ratios.append(ratio)
        shares.append(share)
        print(f"| {i} | {r['sum']:.1f} | {r['ci']:.1f} | {ratio:.2f}x | {statistics.median(r['cached']):.2f} "
              f"(of {', '.join(f'{c:.2f}' for c in r['cached'])}) | {share * 100:.1f} % | "
              f"{'all' if r['states'] == {'cached'} else r['states']} | {'yes' if r['same'] else 'NO'} |")
    print()
    print(f"ci / sum of builds: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x")
    print(f"cached rerun / first ci run: min {min(shares) * 100:.1f} %, median {statistics.median(shares) * 100:.1f} %, "
          f"max {max(shares) * 100:.1f} %")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

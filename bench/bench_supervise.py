"""What the supervised child of `edgec build` costs: the same build in the command's own process
(`EDGEC_SUPERVISE=0`) against the default (the work in a spawned child), in one run.

Each repetition runs both, in alternating order, as a user runs them (a subprocess of
`python -m edgec build`), on the digits CNN: an int8 x86-cpu build calibrated and verified on the
bundled digits data. Per mode it prints the wall time, the CPU time of the process tree (steadier
than wall time on a shared machine) and the peak memory of the whole process tree (the sum of the resident sizes of the command and its child, sampled every 20 ms), and for
the supervised mode the command's own peak (the parent, which imports no TensorFlow): median,
min and max over the repetitions, and the ratios supervised / in-process.

Usage: python bench/bench_supervise.py [--repeat 5] [--precision int8|fp32]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall time, CPU time of the tree, peak tree RSS (MiB) and the command's own peak RSS (MiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_tree, own_peak = 0, 0
    while proc.poll() is None:
        tree = _children()
        pids, todo = [], [proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(tree.get(pid, []))
        peak_tree = max(peak_tree, sum(_status_kib(p, "VmRSS") for p in pids))
        own_peak = max(own_peak, _status_kib(proc.pid, "VmHWM"))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and the child it waited for
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"build failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "tree_mib": peak_tree / 1024, "own_mib": own_peak / 1024}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument("--train-epochs", type=int, default=10)
    args = parser.parse_args()

    from edgec.examples import write_example

    work = Path(tempfile.mkdtemp(prefix="edgec-bench-supervise-"))
    write_example(work, "cnn", epochs=args.train_epochs)
    base = [sys.executable, "-m", "edgec", "build", str(work / "digits_cnn.keras"), "-t", "x86-cpu", "-p",
            args.precision, "--calib", str(work / "calib.npz"), "--eval", str(work / "eval.npz")]
    modes = {"in-process": "0", "supervised": "1"}
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for rep in range(args.repeat):
        order = list(modes) if rep % 2 == 0 else list(reversed(modes))
        for mode in order:
            env = {**os.environ, "EDGEC_PROGRESS": "0", "EDGEC_SUPERVISE": modes[mode]}
            results[mode].append(run([*base, "-o", str(work / f"dist-{mode}-{rep}")], env))
        print(f"repetition {rep + 1}: " + ", ".join(f"{m} {results[m][-1]['wall_s']:.2f} s" for m in modes),
              flush=True)

    print(f"\n`edgec build` of the digits CNN, x86-cpu {args.precision}, calibrated and verified; "
          f"{args.repeat} repetitions, median (min-max)\n")
    print(f"{'mode':12s} {'wall s':>22s} {'CPU s (user+sys)':>22s} {'peak tree RSS MiB':>26s} "
          f"{'command process MiB':>26s}")
    for mode in modes:
        rows = results[mode]
        print(f"{mode:12s} {summary([r['wall_s'] for r in rows]):>22s} {summary([r['cpu_s'] for r in rows]):>22s} "
              f"{summary([r['tree_mib'] for r in rows]):>26s} {summary([r['own_mib'] for r in rows]):>26s}")
    ins, sup = results["in-process"], results["supervised"]
    wall_ratio = [s["wall_s"] / i["wall_s"] for s, i in zip(sup, ins, strict=True)]
    mem_ratio = [s["tree_mib"] / i["tree_mib"] for s, i in zip(sup, ins, strict=True)]
    extra_s = [s["wall_s"] - i["wall_s"] for s, i in zip(sup, ins, strict=True)]
    extra_cpu = [s["cpu_s"] - i["cpu_s"] for s, i in zip(sup, ins, strict=True)]
    extra_mib = [s["tree_mib"] - i["tree_mib"] for s, i in zip(sup, ins, strict=True)]
    print(f"\nsupervised / in-process, per repetition: wall {summary(wall_ratio)}, "
          f"peak tree memory {summary(mem_ratio)}")
    print(f"the child's cost per build: wall {summary(extra_s)} s, CPU {summary(extra_cpu)} s, "
          f"peak memory {summary(extra_mib)} MiB (the supervising command process: "
          f"{statistics.median(r['own_mib'] for r in sup):.0f} MiB)")


if __name__ == "__main__":
    main()

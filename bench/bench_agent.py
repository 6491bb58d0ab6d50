"""Timing overhead of the edgec agent against a bare ``interpreter.invoke()`` loop, in one run.

For each artifact (the digits CNN built fp32 and int8 for x86-cpu, unless --models is given) one
LiteRT interpreter, created by the agent's own runtime adapter, runs paired rounds of:

* bare:  ``for _ in range(n): invoke()`` timed as a whole (nothing but invoke);
* agent: the agent's timed loop (``edgec.agent.bench.timed_loop``: one clock read per inference,
  every latency kept), with gc disabled as ``run_benchmark`` runs it;
* agent + power: the same while the agent's power thread samples an INA3221 fixture tree
  (Jetson Orin Nano JetPack 6 sysfs layout) as fast as it allows (100 Hz target).

Overhead = median over rounds of (agent time / bare time of the same round - 1); the agent's
mean latency is its loop's wall time over n by construction (latencies are differences of
consecutive clock reads), so this is also the bias of the mean it reports. Pairs alternate
order so drift hits both.
On a shared machine that median is noisy, so the script also measures the loop's own cost per
inference with a no-op in place of the model (a Python method calling a C function, as LiteRT's
``Interpreter.invoke`` is) and relates it to the model's latency.

Usage: python bench/bench_agent.py [--rounds 200] [--n 500] [--threads 1] [--models a.tflite ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEC_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "agent" / "fixtures" / "jetson-orin-nano-jp6"


def build_digits(workdir: Path) -> list[Path]:
    """Digits CNN (a few epochs: latency does not depend on accuracy) built fp32 and int8."""
    import numpy as np

    import edgec
    from edgec.examples import digits, make_model, train

    split = digits(seed=0)
    model = make_model("cnn")
    train(model, split, epochs=3, seed=0)
    model.save(workdir / "digits_cnn.keras")
    np.savez(workdir / "calib.npz", x=split.x_train)
    paths = []
    for precision in ("fp32", "int8"):
        result = edgec.build(workdir / "digits_cnn.keras", target="x86-cpu", precision=precision,
                             calib=str(workdir / "calib.npz"), out=workdir / precision)
        paths.append(result.out_dir / "model.tflite")
    return paths


def bare_loop(invoke, n: int, clock) -> float:
    t0 = clock()
    for _ in range(n):
        invoke()
    return clock() - t0


def agent_loop(invoke, n: int, clock, monitor=None) -> tuple[float, float]:
    """(wall time, sum of reported latencies) of the agent's timed loop."""
    from edgec.agent.bench import timed_loop

    gc.disable()
    try:
        latencies, start, end = timed_loop(invoke, n, None, clock, 1e-5)
    finally:
        gc.enable()
    return end - start, sum(latencies)


def paired(invoke, rounds: int, n: int, clock, sensor=None) -> dict:
    from edgec.agent import power

    wall, bare_means, rates = [], [], []
    for r in range(rounds):
        t = {}
        for kind in (("bare", "agent") if r % 2 == 0 else ("agent", "bare")):
            if kind == "bare":
                t["bare"] = bare_loop(invoke, n, clock)
                continue
            monitor = power.PowerMonitor(sensor, clock).start() if sensor else None
            if monitor:
                time.sleep(0.02)  # the thread is sampling before the loop starts
            t["agent"], _ = agent_loop(invoke, n, clock)
            if monitor:
                t0 = clock()
                monitor.stop()
                inside = [s for s in monitor.samples if s[0] <= t0]
                rates.append(len(inside) / (inside[-1][0] - inside[0][0]) if len(inside) > 1 else 0.0)
        bare_means.append(t["bare"] / n)
        wall.append(t["agent"] / t["bare"] - 1)
    q = statistics.quantiles(wall, n=4)
    return {"bare_us": statistics.median(bare_means) * 1e6, "wall": statistics.median(wall), "iqr": (q[0], q[2]),
            "rate_hz": statistics.median(rates) if rates else None}


class _NoOpInterpreter:
    """Shaped like LiteRT's Interpreter.invoke: a Python method that calls into C."""

    def __init__(self):
        self._interpreter = self

    def Invoke(self):  # noqa: N802 - the name LiteRT's C++ wrapper uses
        return None

    def invoke(self):
        self._interpreter.Invoke()


def loop_cost_ns(clock, n: int = 200_000, repeats: int = 15) -> float:
    """Nanoseconds the agent's loop adds per inference, with a no-op in place of the model."""
    noop = _NoOpInterpreter().invoke
    extra = []
    for _ in range(repeats):
        bare = bare_loop(noop, n, clock)
        agent, _ = agent_loop(noop, n, clock)
        extra.append((agent - bare) / n * 1e9)
    return statistics.median(extra)


def measure(path: Path, rounds: int, n: int, threads: int) -> dict:
    from edgec.agent import sensors
    from edgec.agent.fs import Root
    from edgec.agent.runtimes import create
    from edgec.agent.runtimes.inputs import make_inputs

    rt = create("litert", str(path), threads=threads, batch=1)
    rt.load()
    arrays, _ = make_inputs(rt.input_specs())
    rt.set_inputs(arrays)
    invoke, clock = rt.invoke, time.perf_counter
    for _ in range(500):
        invoke()
    timing = paired(invoke, rounds, n, clock)
    with_power = paired(invoke, max(rounds // 5, 10), max(n * 6, 3000), clock,
                        sensors.open_sensor("ina3221", Root(FIXTURE)))
    rt.close()
    return {"model": f"{path.parent.parent.name}/{path.parent.name}/{path.name}", **timing,
            "power": with_power["wall"], "power_iqr": with_power["iqr"], "rate_hz": with_power["rate_hz"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--n", type=int, default=500, help="inferences per loop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="*", type=Path, help=".tflite files (default: build the digits CNN)")
    args = parser.parse_args()
    clock = time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or build_digits(Path(tmp))
        rows = [measure(m, args.rounds, args.n, args.threads) for m in models]
    cost = loop_cost_ns(clock)
    print(f"\nagent timing overhead vs a bare invoke() loop: LiteRT, {args.threads} thread(s), {args.rounds} paired "
          f"rounds x {args.n} inferences (power: {max(args.rounds // 5, 10)} x {max(args.n * 6, 3000)}), medians "
          f"over rounds; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n")
    header = ("artifact", "bare mean us", "agent overhead", "IQR",
              "loop cost per inference", "agent + power thread", "IQR (power)", "power samples/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for r in rows:
        print(f"| {r['model']} | {r['bare_us']:.2f} | {r['wall'] * 100:+.2f} % | "
              f"{r['iqr'][0] * 100:+.1f} .. {r['iqr'][1] * 100:+.1f} % | {cost:.0f} ns = "
              f"{cost / (r['bare_us'] * 1e3) * 100:.2f} % | {r['power'] * 100:+.2f} % | "
              f"{r['power_iqr'][0] * 100:+.1f} .. {r['power_iqr'][1] * 100:+.1f} % | {r['rate_hz']:.0f} |")


if __name__ == "__main__":
    main()

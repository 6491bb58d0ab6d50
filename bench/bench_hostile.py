"""A larger, randomized run of the hostile-input properties (tests/test_hostile_props.py).

`make test` runs each property on a few derandomized examples; this runs SCALE times as many,
with fresh random examples each time, and prints per property the examples run, the time and
the outcome (Hypothesis' statistics), plus any failing example with its shrunk input.

Usage: python bench/bench_hostile.py [--scale 10] [-k build]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0, help="times the examples of make test")
    parser.add_argument("-k", dest="select", help="pytest -k expression (one property)")
    args = parser.parse_args()
    env = {**os.environ, "EDGEC_HOSTILE_EXAMPLES": str(args.scale), "EDGEC_HOSTILE_RANDOM": "1",
           "EDGEC_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
           "--durations=0", str(REPO / "tests" / "test_hostile_props.py")]
    if args.select:
        cmd += ["-k", args.select]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    print(f"hostile-input properties at {args.scale:g}x the make-test examples, randomized: "
          f"exit {proc.returncode}, {wall:.0f} s\n")
    print(f"{'property':48s} {'examples':>9s} {'call s':>8s}  outcome")
    stats = re.findall(r"tests/test_hostile_props.py::(\w+):\n(.*?)(?=\ntests/|\n=|\Z)", text, re.S)
    durations = dict((name, float(s)) for s, name in re.findall(r"([\d.]+)s call\s+\S+::(\w+)", text))
    for name, block in stats:
        passing = sum(int(n) for n in re.findall(r"(\d+) passing", block))
        failing = sum(int(n) for n in re.findall(r"(\d+) failing", block))
        outcome = "FAILED" if failing else "passed"
        print(f"{name:48s} {passing:>9d} {durations.get(name, 0.0):8.1f}  {outcome}")
    if proc.returncode != 0:
        print("\n" + text[-6000:])


if __name__ == "__main__":
    main()

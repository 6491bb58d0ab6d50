"""`edgec search` on the digits CNN: the Pareto front per target, measured here (--device local),
against the fp32 and plain int8 PTQ baselines, and the time the search adds to each trial beyond
building, measuring and training.

For each target: train the example CNN (python -m edgec.examples), search the target kind's
default space with fine-tune epochs 1..E (TPE + Hyperband), print the front as a Markdown table,
say whether a front member dominates plain int8 PTQ in size (zstd bytes) at no more than
--max-drop points of accuracy drop, and print the overhead: per trial, the worker's wall time
around the trial (Optuna's ask and tell, sampling, storage, keys, the front query, the journal)
minus the time in edgec.build, the agent and training, as a share of the latter.

    python bench/bench_search.py [--targets x86-cpu rpi5] [--trials 20] [--epochs 3] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from edgec.examples import write_example
from edgec.search import api, report
from edgec.search.device import Device


def overhead(out: Path) -> dict:
    """Per-trial overhead from the search's journal (trials that built or measured something)."""
    rows = []
    for line in (out / "journal.jsonl").read_text().splitlines():
        e = json.loads(line)
        t = e.get("timings")
        if e["event"] != "end" or not t:
            continue
        work = t["build"] + t["measure"] + t["train"]
        if work <= 0:  # a reused result: nothing built or measured
            continue
        rows.append({"trial": e["trial"], "wall": e["seconds"], "work": work, "extra": e["seconds"] - work})
    total_work = sum(r["work"] for r in rows)
    total_extra = sum(r["extra"] for r in rows)
    shares = [r["extra"] / r["work"] for r in rows]
    return {"trials": len(rows), "work_s": total_work, "extra_s": total_extra,
            "share": total_extra / total_work if total_work else None,
            "median_share": statistics.median(shares) if shares else None,
            "max_share": max(shares) if shares else None,
            "median_extra_s": statistics.median(r["extra"] for r in rows) if rows else None}


def dominating(doc: dict, max_drop: float) -> list[dict]:
    """Front members smaller (zstd) than plain int8 PTQ with a drop of at most ``max_drop`` points."""
    ptq = next(b for b in doc["baselines"] if b["name"] == "int8 PTQ")
    return [t for t in doc["front"] if t["result"]["zstd_bytes"] < ptq["zstd_bytes"]
            and t["result"]["drop"] <= max_drop]


def run_target(target: str, example: dict, data: Path, args) -> dict:
    out = args.out / target
    space = out / "space.toml"
    out.mkdir(parents=True, exist_ok=True)
    space.write_text(f"[space]\nepochs = {{low = 1, high = {args.epochs}}}\n")
    request = api.Request(target=target, eval=str(data / "eval.npz"), model=Path(example["model"]),
                          fine_tune=str(data / "train.npz"), calib=str(data / "calib.npz"), trials=args.trials,
                          space=space, device=Device(runs=args.runs, warmup=50, min_runs=3, max_runs=8, rtol=0.02),
                          out=out, seed=args.seed, study=f"bench-{target}")
    t0 = time.perf_counter()
    doc = api.run(request, on_event=lambda line, event: print(line, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    report.plot(doc, out / "front.png")
    return {"target": target, "seconds": seconds, "doc": doc, "overhead": overhead(out),
            "dominating": [t["number"] for t in dominating(doc, args.max_drop)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["x86-cpu", "rpi5"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3, help="most fine-tune epochs a trial draws")
    parser.add_argument("--example-epochs", type=int, default=30)
    parser.add_argument("--runs", type=int, default=1000, help="timed inferences per agent run")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/bench-search"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data = args.out / "data"
    example = write_example(data, "cnn", epochs=args.example_epochs, seed=args.seed)
    results = [run_target(t, example, data, args) for t in args.targets]
    ok = True
    for r in results:
        doc, o = r["doc"], r["overhead"]
        c = doc["counts"]
        print(f"\n## {r['target']}: {c['finished']} trials in {r['seconds'] / 60:.1f} min ({c.get('COMPLETE', 0)} "
              f"complete, {c.get('PRUNED', 0)} stopped early: {doc['stopped_early']}, {c.get('FAIL', 0)} failed)\n")
        print(report.print_markdown(doc))
        print(f"\nfront members smaller than int8 PTQ (zstd) at <= {args.max_drop:g} point of drop: "
              f"{r['dominating'] or 'none'}")
        print(f"overhead beyond build + measure + train: {o['extra_s']:.2f} s over {o['work_s']:.0f} s in "
              f"{o['trials']} trials = {o['share'] * 100:.2f} % (median per trial {o['median_share'] * 100:.2f} %, "
              f"{o['median_extra_s'] * 1000:.0f} ms; worst {o['max_share'] * 100:.2f} %)")
        ok = ok and bool(r["dominating"])
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items()} for r in results], indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""`edgec search --builder`: width, depth, kernel, activation, dense head, dropout, training and
compression searched together on the digits, against the bundled example CNN built with
`--prune 0.8 --qat` (the demo's compressed build).

Prints the reference, the study's front (Markdown), the front members that are smaller (zstd
bytes of the artifact) and at least as accurate as the reference, the share of trials Hyperband
stopped early (by stage), and the search's overhead per trial.

    python bench/bench_search_builder.py [--trials 30] [--target x86-cpu] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import edgec
from edgec.examples import write_example
from edgec.inspection import compressed_sizes
from edgec.search import api, report
from edgec.search.device import Device

HERE = Path(__file__).resolve().parent
SPACE = """
[space]
precision = "int8"
quantization = ["qat", "ptq"]
prune_structure = "none"
prune = {{low = 0.0, high = 0.8, step = 0.1}}
cluster = ["none", 16]
epochs = {{low = 2, high = 6}}
distill = [false, true]
train_optimizer = "adam"
train_lr = {{low = 1e-3, high = 1e-2, log = true}}
train_batch_size = [32, 64]
train_epochs = {train_epochs}
"""


def reference(example: dict, data: Path, target: str, out: Path, seed: int) -> dict:
    """The example CNN with --prune 0.8 --qat (the demo's settings: 10 fine-tune epochs)."""
    result = edgec.build(example["model"], target=target, fine_tune=str(data / "train.npz"), eval=str(data / "eval.npz"),
                         prune=0.8, qat=True, seed=seed, out=out)
    art = result.manifest["artifacts"][0]
    ver = result.verification
    return {"accuracy": round(ver["artifact_accuracy"] * 100, 4), "drop": ver["accuracy_drop_points"],
            "bytes": art["bytes"], "zstd_bytes": compressed_sizes((result.out_dir / art["file"]).read_bytes())["zstd"],
            "params": result.manifest["source"]["params"]}


def main(argv=None) -> int:
    from bench_search import overhead  # noqa: E402  (bench/ is the script's directory)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--target", default="x86-cpu")
    parser.add_argument("--train-epochs", type=int, default=27, help="Hyperband's maximum resource")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/bench-search-builder"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data = args.out / "data"
    example = write_example(data, "cnn", epochs=30, seed=args.seed)
    ref = reference(example, data, args.target, args.out / "reference", args.seed)
    space = args.out / "space.toml"
    space.write_text(SPACE.format(train_epochs=args.train_epochs))
    request = api.Request(target=args.target, eval=str(data / "eval.npz"), builder=f"{HERE / 'search_models.py'}:digits_family",
                          train=str(data / "train.npz"), calib=str(data / "calib.npz"), trials=args.trials, space=space,
                          device=Device(runs=args.runs, warmup=50, min_runs=3, max_runs=8, rtol=0.02),
                          out=args.out / "search", seed=args.seed, study="bench-builder")
    t0 = time.perf_counter()
    doc = api.run(request, on_event=lambda line, event: print(line, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    report.plot(doc, args.out / "front.png")
    better = [t for t in doc["front"] if t["result"]["zstd_bytes"] < ref["zstd_bytes"]
              and t["result"]["accuracy"] >= ref["accuracy"]]
    by_stage: dict[str, int] = {}
    for t in doc["trials"]:
        if t["state"] == "PRUNED":
            stage = f"{t['stopped']['by']} ({t['stopped'].get('stage')})"
            by_stage[stage] = by_stage.get(stage, 0) + 1
    o = overhead(args.out / "search")
    c = doc["counts"]
    print(f"reference: example CNN ({ref['params']:,} params) --prune 0.8 --qat: accuracy {ref['accuracy']:.2f} % "
          f"(drop {ref['drop']:.2f}), {ref['bytes'] / 1024:.1f} KiB, {ref['zstd_bytes'] / 1024:.1f} KiB zstd")
    print(f"\n{c['finished']} trials in {seconds / 60:.1f} min: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} "
          f"stopped early ({doc['stopped_early_share'] * 100:.0f} %: {by_stage}), {c.get('FAIL', 0)} failed\n")
    print(report.print_markdown(doc))
    print("\nfront members smaller (zstd) and at least as accurate as the reference: "
          + (", ".join(f"{t['number']} ({t['label']}: {t['result']['accuracy']:.2f} %, "
                       f"{t['result']['zstd_bytes'] / 1024:.1f} KiB zstd, {t['result']['nonzero_params']:,} non-zero "
                       "params)" for t in better) or "none"))
    print(f"overhead beyond build + measure + train: {o['extra_s']:.2f} s over {o['work_s']:.0f} s in "
          f"{o['trials']} trials = {o['share'] * 100:.2f} % (median per trial {o['median_share'] * 100:.2f} %)")
    if args.json:
        args.json.write_text(json.dumps({"reference": ref, "doc": doc, "better": [t["number"] for t in better],
                                         "overhead": o, "stopped_by_stage": by_stage}, indent=2, default=str))
    return 0 if better and doc["stopped_early_share"] >= 1 / 3 else 1


if __name__ == "__main__":
    sys.exit(main())

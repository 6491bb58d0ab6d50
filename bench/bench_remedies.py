"""``bench_accuracy.py --remedies``: plain int8, each integer remedy alone, the chosen combination
and the float fallback alone on a mini-Xception (see bench_accuracy's docstring)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

VARIANTS = [
    ("plain int8", {}),
    ("--equalize", {"equalize": True}),
    ("--bias-correct", {"bias_correct": True}),
    ("--range percentile", {"act_range": "percentile"}),
    ("--range mse", {"act_range": "mse"}),
    ("--adaround", {"adaround": True}),
    ("--int16-activations", {"int16_activations": True}),
    ("chosen (--accuracy-control)", {"accuracy_control": True}),
    ("float fallback only (--no-remedies)", {"accuracy_control": True, "remedies": False}),
]


def _latency(paths: dict[str, Path], runs: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    """Median, min and max over rounds of each model's median LiteRT latency (ms), interleaved."""
    from edgec.accuracy.remedies.control import latency_ms

    per_round: dict[str, list[float]] = {n: [] for n in paths}
    contents = {n: p.read_bytes() for n, p in paths.items()}
    for _ in range(rounds):
        got = latency_ms(contents, runs=runs, rounds=1)
        for n, v in got.items():
            per_round[n].append(v)
    return {n: (statistics.median(v), min(v), max(v)) for n, v in per_round.items()}


def run(args) -> None:
    from remedies_models import write

    import edgec

    work = Path(tempfile.mkdtemp(prefix="edgec-bench-remedies-"))
    t0 = time.perf_counter()
    paths = write(work, epochs=args.epochs)
    print(f"mini-Xception trained in {time.perf_counter() - t0:.0f} s; float accuracy on the clean held-out "
          f"labels {paths['float_accuracy'] * 100:.2f} %")
    common = {"target": "rpi5", "precision": "int8", "calib": str(paths["calib"]), "eval": str(paths["agreement"]),
              "input_range": "-1,1", "max_accuracy_drop": args.budget}
    rows, built = [], {}
    for label, options in VARIANTS:
        kw = dict(common)
        if not options.get("accuracy_control"):
            kw.pop("max_accuracy_drop")
        t = time.perf_counter()
        result = edgec.build(paths["model"], out=work / label.replace(" ", "_").replace("-", ""), **kw, **options)
        seconds = time.perf_counter() - t
        m = result.manifest
        ac = m.get("accuracy_control")
        built[label] = result.out_dir / "model.tflite"
        rows.append((label, m, ac, seconds))
    lat = _latency(built, args.runs, args.rounds)
    import numpy as np

    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    x_eval = np.load(paths["agreement"])["x"]
    top1 = keras.models.load_model(paths["model"], compile=False).predict(x_eval, verbose=0).argmax(-1)

    print(f"\nrpi5, budget {args.budget:g} points of top-1 agreement with the float model on 597 held-out images "
          f"(one = 0.17 pt); LiteRT batch 1, 1 thread, median of {args.rounds} interleaved rounds x {args.runs} "
          f"invokes [min..max of the round medians] on this host ({os.cpu_count()} cores, shared)")
    head = ("build", "drop (pt)", "integer MACs", "16-bit act. MACs", "size KiB", "LiteRT ms", "x plain", "build s",
            "remedies / kept float")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    base = lat["plain int8"][0]
    for label, m, ac, seconds in rows:
        drop = _disagreement(built[label], x_eval, top1)
        if ac:
            assert abs(drop - ac["after"]["drop_points"]) < 1e-3, (label, drop, ac["after"]["drop_points"])
        float_share = ac["float_macs_share"] if ac else 0.0
        wide = (ac or {}).get("int16_macs_share", 1.0 if m["options"].get("int16_activations") else 0.0)
        kept = ", ".join(o["layer"] for o in ac["float_ops"]) if ac and ac["float_ops"] else ""
        chosen = " + ".join(ac["remedies"]["chosen"]) if ac and ac.get("remedies") else ""
        what = "; ".join(x for x in (chosen, f"float: {len(ac['float_ops'])} ops ({kept})" if kept else "") if x) or "-"
        med, lo, hi = lat[label]
        print(f"| {label} | {drop:.2f} | {(1 - float_share) * 100:.1f} % | {wide * 100:.0f} % | "
              f"{m['artifacts'][0]['bytes'] / 1024:.1f} | {med:.3f} [{lo:.3f}..{hi:.3f}] | {base / med:.3g} | "
              f"{seconds:.0f} | {what} |")
    for label, _m, ac, _ in rows:
        if not ac:
            continue
        if ac.get("remedies"):
            print(f"\n{label}: remedies tried in order of cost")
            for r in ac["remedies"]["tried"]:
                print(f"  {r['label']:<45} drop {r['drop_points']:.2f}{'  (kept)' if r['kept'] else ''}")
        for f in ac.get("fallbacks") or []:
            print(f"  float-op search on {f['on']:<32} met {f['met']!s:<5} {f['float_ops']} ops, "
                  f"{f['float_macs_share'] * 100:.1f} % of MACs float, drop {f['drop_points']:.2f}")
        priced = (ac.get("remedies") or {}).get("int16_or_float")
        if priced:
            print(f"  16x8 {priced['int16_ms'] * 1000:.1f} us against float ops {priced['float_fallback_ms'] * 1000:.1f} us"
                  f" ({priced['float_fallback_ops']} ops): kept {priced['kept']}")
        print(f"{label}: {ac['evaluations']} configurations measured; latency cost of what is kept 16-bit or float:")
        for c in ac.get("latency_cost") or []:
            print(f"  {c['what']:<45} {c['layers'][:40]:<40} {c['cost_ms'] * 1000:+8.1f} us "
                  f"({c['int8_ms'] * 1000:.1f} -> {c['ms'] * 1000:.1f} us)")
        if not ac.get("latency_cost"):
            print("  nothing")
    print(f"\nwork dir {work}")


def _disagreement(path: Path, x, top1) -> float:
    """Top-1 disagreement of an artifact with the float model, in points (LiteRT on this host)."""
    from edgec.targets.tflite import LiteRTRunner

    got = LiteRTRunner(path)(x)[0]
    return float((got.argmax(-1) != top1).mean() * 100.0)

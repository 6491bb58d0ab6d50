"""The conformance zoo: every Keras Applications family and a transformer block, int8 for each
target kind (rpi5 = TFLite, coral-usb = Edge TPU, jetson-orin-nano = ONNX + TensorRT).

Each architecture is made (random weights, BatchNorm statistics set from data, the smallest input
it allows; tests/zoo/models.py) and built in its own process, so a native crash is a row. Per
build: the exit code, the build's wall time, the artifact size, the integer-op share (TFLite: ops
not computed in float; ONNX: Conv/Gemm/MatMul with int8 Q/DQ inputs), the Edge TPU op share (from
edgec's op map; the compiler itself is not installed here) and the SQNR of each output against the
float model on 32 eval samples. The table is printed and written to docs/zoo.md.

Usage: python bench/bench_zoo.py [--archs MobileNet,ResNet50] [--keras 2,3] [--out build/zoo]
       [--doc docs/zoo.md] [--calib-samples 32] [--rows rows.json] [--from-rows a.json b.json]
       [--merge]

``--keras 3`` builds Keras 3 ``.keras`` files of each family (made in a child process without
TF_USE_LEGACY_KERAS); ``--from-rows`` writes the doc from rows saved by earlier runs, building
nothing; ``--merge`` replaces only this run's rows in the doc's tables (a rerun of a few rows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.zoo.models import ARCHS  # noqa: E402
from tests.zoo.run import PROFILES, run_in_child  # noqa: E402

KINDS = {"rpi5": "rpi5 (TFLite)", "coral-usb": "coral-usb (Edge TPU)", "jetson-orin-nano": "jetson-orin-nano (TensorRT)"}


def cell(row: dict) -> str:
    """exit code, then int-op share (and TPU-op share), with the reason of a non-zero exit."""
    code = row.get("exit")
    parts = [f"**{code}**"]
    if row.get("int_share") is not None:
        parts.append(f"int {row['int_share'] * 100:.0f}%")
    if row.get("tpu_share") is not None:
        parts.append(f"TPU {row['tpu_share'] * 100:.0f}%")
    if code not in (0,) and row.get("error"):
        reason = row["error"]
        if row.get("float_op_names"):
            reason = "float: " + ", ".join(row["float_op_names"])
        parts.append(reason[:90].replace("|", "/"))
    return " · ".join(parts)


def detail(row: dict) -> str:
    sqnr = ", ".join(f"{v:.1f}" for v in (row.get("sqnr_db") or {}).values() if v is not None) or "-"
    size = f"{row['bytes'] / 1e6:.2f}" if row.get("bytes") else "-"
    agree = f"{row['agreement'] * 100:.0f}%" if row.get("agreement") is not None else "-"
    tpu = f"{row['tpu_share'] * 100:.0f}%" if row.get("tpu_share") is not None else "-"
    first = row.get("first_cpu_op") or "-"
    share = f"{row['int_share'] * 100:.0f}%" if row.get("int_share") is not None else "-"
    label = row["arch"] + (" (Keras 3)" if row.get("keras", 2) == 3 else "")
    return (f"| {label} | {row['profile']} | {row['exit']} | {row.get('seconds', '-')} | {size} | "
            f"{share} | {tpu} | {first} | {sqnr} | {agree} |")


def ordered(rows: list[dict]) -> list[dict]:
    """Rows in the zoo's order: architecture, then tf-keras before Keras 3, then target kind."""
    order = {name: i for i, name in enumerate(ARCHS)}
    kinds = {p: i for i, p in enumerate(PROFILES)}
    return sorted(rows, key=lambda r: (order.get(r["arch"], 99), r.get("keras", 2), kinds.get(r["profile"], 9)))


def table(rows: list[dict]) -> str:
    archs = list(dict.fromkeys((r["arch"], r.get("keras", 2)) for r in ordered(rows)))
    by = {(r["arch"], r.get("keras", 2), r["profile"]): r for r in rows}
    lines = ["| architecture | input | " + " | ".join(KINDS[p] for p in PROFILES) + " |",
             "| --- | --- |" + " --- |" * len(PROFILES)]
    for arch, keras in archs:
        a = ARCHS[arch]
        shape = "x".join(str(d) for d in ((a.size, a.channels) if arch.startswith("Transformer")
                                          else (a.size, a.size, a.channels)))
        label = arch + (" (Keras 3)" if keras == 3 else "")
        lines.append(f"| {label} | {shape} | " + " | ".join(
            cell(by[(arch, keras, p)]) if (arch, keras, p) in by else "-" for p in PROFILES) + " |")
    return "\n".join(lines)


def details(rows: list[dict]) -> str:
    head = ["| architecture | profile | exit | build s | size MB | int-op share | TPU-op share | "
            "first CPU op | SQNR dB per output | top-1 agreement |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    return "\n".join(head + [detail(r) for r in ordered(rows)])


def merge(doc: str, rows: list[dict]) -> tuple[str, str, float]:
    """The summary and per-build tables of an earlier ``doc`` with this run's builds in place of
    theirs (rows of other builds kept as written), and the builds' total minutes."""
    def lines_after(heading: str) -> list[str]:
        text = doc.split(heading, 1)[1] if heading in doc else ""
        table = text.split("\n|", 1)[1].split("\n\n", 1)[0] if "\n|" in text else ""
        return ["|" + line if i == 0 else line for i, line in enumerate(table.splitlines())][2:]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    def order(label: str, profile: str = "") -> tuple:
        arch = label.removesuffix(" (Keras 3)")
        return (list(ARCHS).index(arch) if arch in ARCHS else 99, label != arch,
                PROFILES.index(profile) if profile in PROFILES else 9)

    summary = {cells(ln)[0]: ln for ln in lines_after("## Summary")}
    summary.update({cells(ln)[0]: ln for ln in table(rows).splitlines()[2:]})
    full = {tuple(cells(ln)[:2]): ln for ln in lines_after("## Every build")}
    full.update({tuple(cells(ln)[:2]): ln for ln in details(rows).splitlines()[2:]})
    head, head_full = table(rows).splitlines()[:2], details(rows).splitlines()[:2]
    seconds = [cells(ln)[3] for ln in full.values()]
    total = sum(float(s) for s in seconds if s.replace(".", "", 1).isdigit()) / 60
    return ("\n".join(head + [summary[k] for k in sorted(summary, key=order)]),
            "\n".join(head_full + [full[k] for k in sorted(full, key=lambda k: order(*k))]), total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--keras", default="2", help="2, 3 or 2,3: tf-keras and/or Keras 3 model files")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "zoo")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "zoo.md")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--rows", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--from-rows", type=Path, nargs="+", help="rows of earlier runs: write the doc only")
    parser.add_argument("--merge", action="store_true",
                        help="keep the --doc's table rows of builds not in this run (a partial rerun)")
    args = parser.parse_args()
    rows: list[dict] = []
    start = time.perf_counter()
    versions = [int(v) for v in args.keras.split(",")]
    for path in args.from_rows or []:
        rows.extend(json.loads(path.read_text()))
    for name in [] if args.from_rows else args.archs.split(","):
        for keras3 in [v == 3 for v in versions if v == 2 or ARCHS[name].keras3]:
            out = args.out / (name + ("-keras3" if keras3 else ""))
            got = run_in_child(name, out, keras3=keras3, calib_samples=args.calib_samples)
            rows.extend(got)
            for r in got:
                print(f"{name:22s} keras{r.get('keras', 2)} {r['profile']:18s} exit {r['exit']} "
                      f"{r.get('seconds', '-')} s  {(r.get('error') or '')[:120]}", flush=True)
    total = sum(r.get("seconds") or 0 for r in rows)  # the builds' own wall times, as in the table
    if args.rows:
        args.rows.write_text(json.dumps(rows, indent=1) + "\n")
    summary, full = table(rows), details(rows)
    if args.merge and args.doc.exists():
        summary, full, total = merge(args.doc.read_text(), rows)
        total *= 60
    print(summary)
    print(full)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(DOC.format(summary=summary, details=full, total=total / 60,
                                   samples=args.calib_samples) + "\n")
    print(f"wrote {args.doc} (builds {total / 60:.1f} min, run {(time.perf_counter() - start) / 60:.1f} min)")


DOC = """# What models work: the conformance zoo

`python bench/bench_zoo.py` (or `make conformance`, its pytest twin) builds each Keras
Applications family and a transformer encoder block, int8, for one profile of each target kind.
Models have random weights with BatchNorm statistics set from data (one training-mode batch at
momentum 0), at the smallest input each family allows; {samples} calibration samples, 32 eval
samples without labels. ConvNeXtTiny and the tanh-GELU transformer are handed over as SavedModel
signatures (tf-keras cannot reload its own ConvNeXtTiny file, 'Unknown layer: LayerScale'; the tanh
GELU is a lambda). Rows marked (Keras 3) are `.keras` files written by Keras 3 in a process without
TF_USE_LEGACY_KERAS (Keras 3 has no RegNet), built through edgec's Keras 3 path; where a Keras 3
row is missing, the run above did not include it (`--keras 3 --archs ...` adds it).

Exit codes as the CLI gives them: **0** built and verified; **1** a check failed, with the
reason (an int8 artifact that computes some ops in float lists them; `--allow-float-ops` accepts
it); never 3 (internal error) or a native crash. The Edge TPU share is edgec's op map of the
int8 model (ops that stay on the CPU are reported, not a failure); `edgetpu_compiler` is not
installed on this machine, so the compiler's own split is not in the table.

## Summary (exit code · integer-op share · Edge TPU op share)

{summary}

int-op share: TFLite, the share of ops not computed in float; ONNX, the share of Conv/Gemm/MatMul
with int8 Q/DQ on their inputs (what TensorRT runs in int8). Exact GELU is LiteRT's fused GELU op
(int8 kernels) from either Keras: both call `tf.nn.gelu`. Keras 3's LayerNormalization (ConvNeXt,
the transformer) writes its offset as `-mean * inv + beta`, whose negation the TFLite converter
keeps as a float NEG; edgec's Keras 3 export traces it as `beta - mean * inv`, tf-keras' form and
the same float numbers, so those builds are full-integer too.

## Every build

{details}

SQNR and agreement compare the int8 artifact (LiteRT, ONNX Runtime) with the float model on
the same samples. With random weights they say little about the accuracy of trained weights:
several BatchNorm networks (EfficientNet, ResNet, RegNetY) amplify any small perturbation layer
after layer, so int8 rounding alone moves their outputs far; networks without that (Xception,
ConvNeXt, the transformer) keep 20-30 dB. Compare the target kinds on one architecture.

The builds took {total:.0f} min in all on a 2-core x86 machine shared with other work (build
times in the table are wall times under that load; rows rebuilt later with `--merge` carry the
times of their own run).
"""


if __name__ == "__main__":
    main()

"""What a build records of each artifact (its bytes, sha256 and, for int8 model files, the ops that
still compute in float) and the checks its manifest carries: the accuracy budget (on labels, or
top-1 agreement without them), finite outputs and full-integer int8 artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.config import BuildOptions, Precision
from edgec.util import sha256_file


def record_artifact(work: Path, art, precision: Precision) -> dict[str, Any]:
    """The manifest entry of one artifact; int8 model files list the ops that still compute in float."""
    from edgec.accuracy import float_ops

    path = work / art.file
    record = {"file": art.file, "role": art.role, "format": art.format, "precision": art.precision,
              "sha256": sha256_file(path), "bytes": path.stat().st_size, **art.info}
    if art.precision == Precision.INT8.value and art.format in ("tflite", "onnx") and art.role != "edgetpu_model":
        record["float_ops"] = float_ops(path, art.format)
        if record.get("float_ops_chosen"):  # kept float by --accuracy-control, on purpose
            from edgec.accuracy import mark_chosen

            record["float_ops"] = mark_chosen(path, art.format, record["float_ops"], record["float_ops_chosen"])
    return record


def build_checks(options: BuildOptions, verification: dict[str, Any] | None,
                 records: list[dict[str, Any]], control: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The manifest's checks of a build; a failed one has ``passed`` False (exit code 1)."""
    checks = []
    if options.max_accuracy_drop is not None and control is not None and not control["metric"]["labelled"]:
        drop = control["after"]["drop_points"]  # no labels: top-1 disagreement with the float model
        ok = drop <= options.max_accuracy_drop
        checks.append({
            "name": "max_accuracy_drop", "limit": options.max_accuracy_drop, "value": drop, "passed": ok,
            "metric": "agreement",
            "message": (f"top-1 disagreement with the float model {drop:.2f} points (no labels) is "
                        + (f"within the budget of {options.max_accuracy_drop:g}" if ok else
                           f"over --max-accuracy-drop {options.max_accuracy_drop:g}, even with "
                           f"{len(control['float_ops'])} ops kept in float (the best found)")),
        })
    elif options.max_accuracy_drop is not None and verification is not None:
        drop = verification["accuracy_drop_points"]
        ok = drop <= options.max_accuracy_drop
        where = f" on output '{verification['eval_output']}'" if len(verification["outputs"]) > 1 else ""
        checks.append({
            "name": "max_accuracy_drop", "limit": options.max_accuracy_drop, "value": drop, "passed": ok,
            "message": (f"accuracy drop {drop:.2f} points{where} is within the budget of {options.max_accuracy_drop:g}" if ok
                        else f"accuracy drop {drop:.2f} points{where} exceeds --max-accuracy-drop {options.max_accuracy_drop:g} "
                             f"(float {verification['float_accuracy']:.4f}, artifact {verification['artifact_accuracy']:.4f})"),
        })
    if verification is not None and verification.get("non_finite_outputs"):
        bad = [o for o in verification["outputs"] if o.get("non_finite_samples")]
        checks.append({"name": "finite_outputs", "value": sum(o["non_finite_samples"] for o in bad), "passed": False,
                       "message": f"{verification['artifact']} outputs NaN or Inf on "
                                  + ", ".join(f"{o['non_finite_samples']} samples of '{o['name']}'" for o in bad)
                                  + f" of {verification['data']}, where the float model's outputs are finite"})
    for record in records:
        ops = record.get("float_ops")
        if ops is None:
            continue
        chosen = [o for o in ops if o.get("chosen")]
        if chosen and len(chosen) == len(ops):
            kept = record.get("float_ops_chosen") or []
            checks.append({"name": "full_integer", "artifact": record["file"], "value": 0, "chosen": len(chosen),
                           "passed": True,
                           "message": f"{record['file']} is int8 but for the {len(kept)} op{'s' if len(kept) != 1 else ''} "
                                      f"--accuracy-control kept in float on purpose ({', '.join(o['layer'] for o in kept[:6])}"
                                      f"{', ...' if len(kept) > 6 else ''})"})
            continue
        ops = [o for o in ops if not o.get("chosen")]
        if not ops:
            checks.append({"name": "full_integer", "artifact": record["file"], "value": 0, "passed": True,
                           "message": f"{record['file']} is full-integer: no op computes in float"})
            continue
        listed = ", ".join(f"#{o['index']} {o['op']}" for o in ops[:12]) + (f", ... ({len(ops)} ops)" if len(ops) > 12 else "")
        checks.append({
            "name": "full_integer", "artifact": record["file"], "value": len(ops), "passed": options.allow_float_ops,
            "message": (f"{record['file']} computes {len(ops)} ops in float: {listed}"
                        + ("; accepted with --allow-float-ops" if options.allow_float_ops else
                           "; those ops have no int8 kernel here (replace them, or pass --allow-float-ops to accept "
                           "a partly float model, which the Edge TPU and int8-only accelerators cannot run)")),
        })
    return checks

"""Build zoo models for the three target kinds and summarize each build as one row.

A row records the exit code the CLI gives the build (0 ok; 1 a check failed, e.g. float ops in an
int8 artifact; 2 bad input; 3 an internal error: ``EdgecError.exit_code``, 1 when a check
failed, 3 for any other exception), the first line of the error, the wall time, the primary
artifact's size, its integer-op share, the Edge TPU op share (coral) and the SQNR of each output
against the float model on the eval samples.

``python -m tests.zoo.run NAME OUT [--keras3] [--calib-samples N]`` makes one architecture and
builds it for every zoo profile in one process, printing the rows as JSON (a native crash shows as
the child's signal in :func:`run_in_child`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tests.zoo.models import ARCHS, REPO, save, save_in_child

#: one profile per target kind, all at int8
PROFILES = ("rpi5", "coral-usb", "jetson-orin-nano")
CALIB_SAMPLES = 32


def build_row(model_path: Path, profile: str, data: Path, out: Path,
              calib_samples: int = CALIB_SAMPLES) -> dict[str, Any]:
    """Build ``model_path`` for ``profile`` at int8 through the API; the row of :func:`summarize`."""
    import edgec
    from edgec.errors import EXIT_INTERNAL, EdgecError

    start = time.perf_counter()
    try:
        result = edgec.build(model_path, target=profile, precision="int8", calib=str(data / "calib.npz"),
                             calib_samples=calib_samples, eval=str(data / "eval.npz"), out=out)
    except EdgecError as exc:
        return {"profile": profile, "exit": exc.exit_code, "error": str(exc).splitlines()[0][:300],
                "seconds": round(time.perf_counter() - start, 1)}
    except Exception as exc:  # what the CLI reports as an internal error
        return {"profile": profile, "exit": EXIT_INTERNAL, "error": f"{type(exc).__name__}: {exc}"[:300],
                "traceback": traceback.format_exc()[-1500:], "seconds": round(time.perf_counter() - start, 1)}
    row = summarize(result.manifest, result.out_dir)
    failed = [c["message"] for c in result.checks if not c["passed"]]
    row.update(profile=profile, exit=0 if not failed else 1, error=failed[0][:300] if failed else None,
               seconds=round(time.perf_counter() - start, 1))
    return row


def summarize(manifest: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Size, integer-op share, Edge TPU op share, verification figures of a build's manifest."""
    primary = next((a for a in manifest["artifacts"] if a.get("verified")),
                   next(a for a in manifest["artifacts"] if a.get("role") == "model"))
    float_ops = primary.get("float_ops") or []
    counts = primary.get("op_counts") or {}
    if primary["format"] == "onnx":  # the ops TensorRT runs in int8: Conv/Gemm/MatMul with Q/DQ inputs
        compute = sum(counts.get(op, 0) for op in ("Conv", "ConvTranspose", "Gemm", "MatMul"))
    else:
        compute = int(primary.get("num_ops") or sum(counts.values()))
    row: dict[str, Any] = {
        "format": primary["format"], "bytes": int(primary.get("bytes") or (out_dir / primary["file"]).stat().st_size),
        "ops": compute, "float_ops": len(float_ops),
        "float_op_names": sorted({f.get("op", "?") for f in float_ops}),
        "int_share": round(1 - len(float_ops) / compute, 3) if compute else None,
    }
    analysis = (manifest.get("edgetpu") or {}).get("analysis") or {}
    if analysis:
        row.update(tpu_share=analysis.get("op_share"), tpu_mac_share=analysis.get("mac_share"),
                   first_cpu_op=(analysis.get("first_cpu_op") or {}).get("op"))
    v = manifest.get("verification") or {}
    row.update(sqnr_db={o["name"]: o.get("sqnr_db") for o in v.get("outputs", [])},
               agreement=v.get("agreement"), verified=bool(v))
    return row


def run_arch(name: str, out: Path, profiles=PROFILES, keras3: bool = False,
             calib_samples: int = CALIB_SAMPLES) -> list[dict[str, Any]]:
    """Make ``name`` (a Keras 3 file in a child process with ``keras3``) and build it for each
    profile in this process."""
    out = Path(out)
    data = out / "model"
    start = time.perf_counter()
    try:
        path = save_in_child(name, data, keras3=True) if keras3 else save(name, data)
    except Exception as exc:  # the model, not edgec: a row that says so, never an edgec exit code
        return [{"arch": name, "profile": p, "keras": 3 if keras3 else 2, "exit": "not made",
                 "error": f"making the model failed: {str(exc).strip().splitlines()[-1][:250]}"}
                for p in profiles]
    made = round(time.perf_counter() - start, 1)
    rows = []
    for profile in profiles:
        row = build_row(path, profile, data, out / "dist" / profile, calib_samples)
        row.update(arch=name, keras=3 if keras3 else 2, make_seconds=made)
        rows.append(row)
    return rows


def run_in_child(name: str, out: Path, profiles=PROFILES, keras3: bool = False,
                 calib_samples: int = CALIB_SAMPLES, timeout: int = 3600) -> list[dict[str, Any]]:
    """:func:`run_arch` in a fresh process: a native crash or a hang is a row, not the end of the run."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "EDGEC_PROGRESS": "0",
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "tests.zoo.run", name, str(out), "--profiles", ",".join(profiles),
            "--calib-samples", str(calib_samples), *(["--keras3"] if keras3 else [])]
    start = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return [{"arch": name, "profile": p, "keras": 3 if keras3 else 2, "exit": "timeout",
                 "error": f"no result within {timeout} s"} for p in profiles]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{\"rows\"")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])["rows"]
    reason = (f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}")
    tail = done.stderr.strip().splitlines()[-1:] or [""]
    return [{"arch": name, "profile": p, "keras": 3 if keras3 else 2, "exit": "crash",
             "error": f"the process ended with {reason}: {tail[0][:300]}",
             "seconds": round(time.perf_counter() - start, 1)} for p in profiles]


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.zoo.run")
    parser.add_argument("name", choices=sorted(ARCHS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--calib-samples", type=int, default=CALIB_SAMPLES)
    parser.add_argument("--keras3", action="store_true")
    args = parser.parse_args(argv)
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    rows = run_arch(args.name, args.out, args.profiles.split(","), args.keras3, args.calib_samples)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])

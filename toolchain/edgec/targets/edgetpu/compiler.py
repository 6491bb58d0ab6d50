"""Running edgetpu_compiler where it can run (x86-64 Linux with the compiler on PATH)."""

from __future__ import annotations

import logging
import platform
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgec.targets.edgetpu.compiler_log import parse_compiler_output
from edgec.targets.edgetpu.rules import EdgeTPUSettings, rules

log = logging.getLogger(__name__)

COMPILER_STDOUT = "edgetpu_compiler.log"
#: seconds granted beyond the compiler's own ``-t`` timer before edgec kills it
TIMEOUT_MARGIN_S = 60

# --------------------------------------------------------------------------------------------
# running the compiler


def host_can_compile() -> str | None:
    """Why this host cannot run edgetpu_compiler, or None when it can (x86-64 only)."""
    machine = platform.machine().lower()
    if machine not in rules()["compiler"]["host_arch"]:
        return (f"edgetpu_compiler runs only on x86-64 Linux hosts; this host is {machine or 'unknown'}: compile on "
                f"an x86-64 machine or in Coral's web compiler ({rules()['compiler']['web']})")
    return None


def find_compiler() -> str | None:
    """Path of edgetpu_compiler on PATH (None when absent)."""
    return shutil.which(rules()["compiler"]["executable"])


def compiler_command(model: Path, out_dir: Path, settings: EdgeTPUSettings, executable: str = "edgetpu_compiler") -> list[str]:
    """The compiler invocation for a profile: ``-s`` (per-op table), ``-m``, ``-t``, ``-o``, segments."""
    cmd = [executable, "-s", "-m", str(settings.min_runtime_version), "-t", str(settings.compile_timeout_s),
           "-o", str(out_dir)]
    if settings.num_segments > 1:
        cmd.append(f"--num_segments={settings.num_segments}")
    return [*cmd, str(model)]


def unavailable_reason() -> str | None:
    """Why the compiler cannot run here (wrong host or not installed), or None."""
    problem = host_can_compile()
    if problem:
        return problem
    if find_compiler() is None:
        return f"edgetpu_compiler not found on PATH (install: {rules()['compiler']['install']})"
    return None


def compile_model(model: Path, settings: EdgeTPUSettings, *, user_out_dir: Path) -> dict[str, Any]:
    """Run edgetpu_compiler on ``model`` (inside its directory) when this host can.

    Args:
        model: the int8 .tflite inside the build directory.
        settings: the profile's Edge TPU settings.
        user_out_dir: where the build ends up (for the command shown to the user).

    Returns:
        ``status`` ("compiled", "not_compiled", "failed", "timed_out"), ``reason``, ``command``
        (what to run by hand), and when it ran: ``invocation``, ``returncode``, ``version``,
        ``parsed`` output, and ``files`` (compiled models and op logs, names relative to the
        build directory).
    """
    manual = shlex.join(compiler_command(user_out_dir / model.name, user_out_dir, settings))
    problem = host_can_compile()
    if problem:
        return {"status": "not_compiled", "reason": problem, "command": manual}
    exe = find_compiler()
    if exe is None:
        return {"status": "not_compiled", "reason": "edgetpu_compiler not found", "command": manual,
                "install": rules()["compiler"]["install"]}
    work = model.parent / ".edgetpu"
    work.mkdir(exist_ok=True)
    # compile a copy named model.tflite so the compiler's own names are model_edgetpu.tflite,
    # model_segment_K_of_N_edgetpu.tflite and model_edgetpu.log
    src = work / "model.tflite"
    shutil.copyfile(model, src)
    cmd = compiler_command(src.name, Path("."), settings, executable=exe)
    result: dict[str, Any] = {"command": manual, "invocation": shlex.join(cmd)}
    log.info("running %s", result["invocation"])
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                              timeout=settings.compile_timeout_s + TIMEOUT_MARGIN_S)
    except subprocess.TimeoutExpired as exc:
        text = _text(exc.stdout) + _text(exc.stderr)
        (model.parent / COMPILER_STDOUT).write_text(text)
        shutil.rmtree(work, ignore_errors=True)
        return {**result, "status": "timed_out", "files": [COMPILER_STDOUT],
                "reason": f"edgetpu_compiler did not finish within {settings.compile_timeout_s + TIMEOUT_MARGIN_S} s",
                "parsed": parse_compiler_output(text)}
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        return {**result, "status": "failed", "reason": f"cannot run {exe}: {exc.strerror or exc}"}
    text = proc.stdout + (("\n" + proc.stderr) if proc.stderr else "")
    (model.parent / COMPILER_STDOUT).write_text(text)
    parsed = parse_compiler_output(text)
    files = [COMPILER_STDOUT]
    produced = sorted(p for p in work.iterdir() if p.name != src.name)
    for p in produced:
        if p.suffix in (".tflite", ".log"):
            shutil.move(str(p), model.parent / p.name)
            files.append(p.name)
    shutil.rmtree(work, ignore_errors=True)
    models = [f for f in files if f.endswith("_edgetpu.tflite")]
    for m in parsed["models"]:  # read the op table from the log file when the console had none
        log_name = Path(m.get("operation_log") or "").name
        if not m.get("operators") and log_name in files:
            from_log = parse_compiler_output((model.parent / log_name).read_text())
            if from_log["models"]:
                m["operators"] = from_log["models"][0].get("operators", [])
                if "ops_on_tpu" not in m and "ops_on_tpu" in from_log["models"][0]:
                    m["ops_on_tpu"] = from_log["models"][0]["ops_on_tpu"]
                    m["ops_on_cpu"] = from_log["models"][0]["ops_on_cpu"]
    result.update(returncode=proc.returncode, version=parsed["version"], parsed=parsed, files=files,
                  models=models)
    if proc.returncode != 0 or parsed["succeeded"] is False or not models:
        why = "; ".join(parsed["errors"][:3]) or (proc.stderr.strip().splitlines() or [""])[-1] or \
            f"exit status {proc.returncode}"
        if proc.returncode == 0 and not models and not parsed["errors"]:
            why = "the compiler exited 0 but wrote no *_edgetpu.tflite"
        result.update(status="failed", reason=f"edgetpu_compiler failed: {why}")
        return result
    result.update(status="compiled", reason=None)
    return result


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


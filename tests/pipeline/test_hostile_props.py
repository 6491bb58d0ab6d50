"""Property-based: hostile data files and option values for build, analyze, inspect and ci.

Whatever the input, the command exits 0, 1 or 2 (3 is an internal bug, never the input's fault),
prints no traceback, leaves nothing behind in --out or the temporary folder, and prints strict
JSON under --json. The example counts are small here (``make test``, derandomized: the same
examples every run); ``bench/bench_hostile.py`` runs many more, randomized
(``EDGEC_HOSTILE_EXAMPLES``, ``EDGEC_HOSTILE_RANDOM``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("EDGEC_HOSTILE_EXAMPLES", "1"))
SETTINGS = dict(deadline=None, derandomize=not os.environ.get("EDGEC_HOSTILE_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------- data files

SHAPES = [(8, 8, 1), (8, 8), (28, 28, 1), (8, 8, 3), (64,), ()]
DTYPES = [np.float32, np.float64, np.float16, np.uint8, np.int32, np.bool_, np.complex64]
SPECIALS = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0]


@st.composite
def arrays(draw, shape_choices=SHAPES):
    n = draw(st.sampled_from([0, 1, 3, 17]))
    shape = (n, *draw(st.sampled_from(shape_choices)))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x = (rng.random(shape) * draw(st.sampled_from([1.0, 255.0]))).astype(dtype)
    if x.size and dtype not in (np.uint8, np.int32, np.bool_) and draw(st.booleans()):
        flat = x.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(draw(st.integers(1, 3))):
                flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIALS))
    return x


@st.composite
def labels(draw, n: int):
    kind = draw(st.sampled_from(["none", "int", "negative", "huge", "fraction", "nan", "text", "short", "one-hot",
                                 "soft", "whole-float"]))
    if kind == "none":
        return None
    return {
        "int": np.arange(n) % 10, "negative": -np.ones(n, np.int64), "huge": np.full(n, 2 ** 40),
        "fraction": np.arange(n) + 0.5, "nan": np.full(n, np.nan), "text": np.array(["cat"] * n),
        "short": np.arange(max(n - 1, 0)), "one-hot": np.eye(10)[np.arange(n) % 10],
        "soft": np.full((n, 10), 0.1), "whole-float": (np.arange(n) % 10).astype(np.float64),
    }[kind]


@st.composite
def data_file(draw, folder: Path, name: str) -> Path:
    """A file a user might pass as --calib/--eval: a good, odd or damaged .npz, .npy or image folder."""
    kind = draw(st.sampled_from(["npz", "npz", "npz", "npy", "empty", "truncated", "text", "images"]))
    if kind == "images":
        from PIL import Image

        root = folder / name
        root.mkdir()
        for i in range(draw(st.integers(1, 3))):
            w, h = draw(st.sampled_from([(8, 8), (1, 1), (300, 2)]))
            path = root / f"{i}.png"
            if draw(st.booleans()):
                Image.new("L", (w, h), color=i * 40).save(path)
            else:
                path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(draw(st.binary(max_size=40))))
        return root
    path = folder / f"{name}.{'npy' if kind == 'npy' else 'npz'}"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text(draw(st.text(max_size=40)))
    elif kind == "npy":
        np.save(path, draw(arrays()))
    else:
        x = draw(arrays())
        y = draw(labels(len(x)))
        arrays_ = {"x": x} if y is None else {"x": x, "y": y}
        if draw(st.integers(0, 9)) == 0:
            arrays_ = {"images": x}
        np.savez(path, **arrays_)
        if kind == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[:draw(st.integers(0, max(len(data) - 1, 0)))])
    return path


NUMBERS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e308", "abc", "0.5", "1", ""])


# ---------------------------------------------------------------------------------------- harness

@pytest.fixture
def private_tmp(monkeypatch, tmp_path):
    """The temporary folder of this process (and of its build children), to see what is left there."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def invoke(*args) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from edgec.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an exception the CLI let through is a failure of the property
    return result.exit_code, result.stdout, result.stderr


def check(code: int, out: str, err: str, *, as_json: bool) -> None:
    assert code in (0, 1, 2), (code, err[-2000:])
    assert "Traceback" not in out + err, err[-3000:]
    if code == 2:
        assert len([ln for ln in err.splitlines() if ln.startswith("Error:")]) == 1, err[-2000:]
    if as_json and code in (0, 1) and out.strip():
        strict_loads(out)


def clean(out_root: Path, tmp: Path, profile: str, code: int) -> None:
    if code == 0 or code == 1:
        left = sorted(p.name for p in out_root.iterdir()) if out_root.exists() else []
        assert left in ([profile], []), left
    else:
        assert not out_root.exists() or not any(out_root.iterdir()), sorted(os.listdir(out_root))
    assert left_in(tmp) == [], left_in(tmp)


def left_in(tmp: Path) -> list[str]:
    # TensorFlow's autograph keeps the modules it generates in this process until it exits; a
    # build in its own process (the CLI's supervised child) leaves nothing at all
    return sorted(p.name for p in tmp.iterdir() if not p.name.startswith("__autograph_generated_file"))


@pytest.fixture(scope="module")
def tflite_bytes(digits_model_path, tmp_path_factory) -> bytes:
    import edgec

    out = tmp_path_factory.mktemp("hostile-artifact")
    return (edgec.build(digits_model_path, target="x86-cpu", precision="fp32", out=out).out_dir
            / "model.tflite").read_bytes()


# ------------------------------------------------------------------------------------- properties

@settings(max_examples=examples(20), **SETTINGS)
@given(data=st.data())
def test_build_with_hostile_data_and_options(data, digits_model_path, tmp_path, private_tmp, monkeypatch):
    monkeypatch.setenv("EDGEC_SUPERVISE", "0")  # in this process: TensorFlow is loaded once
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    out = case / "dist"
    precision = data.draw(st.sampled_from(["fp32", "int8", "dynamic"]))
    args = ["build", digits_model_path, "-t", "x86-cpu", "-p", precision, "-o", out, "--json"]
    if precision == "int8" or data.draw(st.booleans()):
        args += ["--calib", data.draw(data_file(case, "calib")), "--calib-samples",
                 data.draw(st.sampled_from(["1", "5", "200"]))]
    if data.draw(st.booleans()):
        args += ["--eval", data.draw(data_file(case, "eval"))]
        if data.draw(st.booleans()):
            args += ["--max-accuracy-drop", data.draw(NUMBERS)]
    if data.draw(st.integers(0, 3)) == 0:
        args += ["--mean", data.draw(NUMBERS), "--std", data.draw(NUMBERS)]
    code, stdout, err = invoke(*args)
    check(code, stdout, err, as_json=True)
    clean(out, private_tmp, "x86-cpu", code)
    shutil.rmtree(case)


@settings(max_examples=examples(6), **SETTINGS)
@given(data=st.data())
def test_analyze_with_hostile_data(data, digits_model_path, tmp_path, private_tmp, monkeypatch):
    monkeypatch.setenv("EDGEC_SUPERVISE", "0")  # in this process: TensorFlow is loaded once
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    calib = case / "calib.npz"
    x = data.draw(arrays(shape_choices=[(8, 8, 1), (8, 8), ()]))
    if x.size and x.shape[1:] == (8, 8, 1):  # hostile always: a valid analysis takes minutes, not an example
        x = x.astype(np.float32)
        x.reshape(-1)[0] = np.nan
    np.savez(calib, x=x)
    args = ["analyze", digits_model_path, "-t", "x86-cpu", "--calib", calib, "--json",
            "--calib-samples", data.draw(st.sampled_from(["1", "10"]))]
    if data.draw(st.booleans()):
        args += ["--eval", data.draw(data_file(case, "eval"))]
    code, stdout, err = invoke(*args)
    check(code, stdout, err, as_json=True)
    assert code == 2
    assert left_in(private_tmp) == []
    shutil.rmtree(case)


@settings(max_examples=examples(25), **SETTINGS)
@given(data=st.data())
def test_inspect_hostile_artifacts(data, tflite_bytes, tmp_path):
    suffix = data.draw(st.sampled_from([".tflite", ".onnx", ".bin"]))
    kind = data.draw(st.sampled_from(["empty", "random", "truncated", "flipped", "whole"]))
    blob = {"empty": b"", "random": data.draw(st.binary(min_size=1, max_size=512)), "whole": tflite_bytes,
            "truncated": tflite_bytes[:data.draw(st.integers(1, len(tflite_bytes) - 1))]}.get(kind)
    if kind == "flipped":
        blob = bytearray(tflite_bytes)
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, 64))] ^= 0xFF  # the flatbuffer's root offsets and identifier
        blob = bytes(blob)
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / f"model{suffix}"
    path.write_bytes(blob)
    args = ["inspect", path, "--json"] + (["--edgetpu"] if data.draw(st.booleans()) else [])
    code, stdout, err = invoke(*args)
    check(code, stdout, err, as_json=True)
    if kind == "whole" and suffix == ".tflite":
        assert code == 0


TOML_VALUES = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1.5", '"x"', "true", "[]", "[nan]", '"0.5,nan"',
                               "1e400", "{}"])
KEYS = ["calib-samples", "epochs", "prune", "max-accuracy-drop", "seed", "mean", "std", "lr", "cluster", "qat",
        "precision", "unknown-key"]
BUDGETS = ["max_accuracy_drop", "max_bytes", "min_compression_rate", "max_bytes_growth_pct", "nonsense"]


@settings(max_examples=examples(25), **SETTINGS)
@given(data=st.data())
def test_ci_plan_with_hostile_configs(data, tmp_path):
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    (case / "m.keras").write_bytes(b"never loaded by a plan")
    model_keys = "\n".join(f"{k} = {data.draw(TOML_VALUES)}"
                           for k in data.draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3)))
    budget_keys = "\n".join(f"{k} = {data.draw(TOML_VALUES)}"
                            for k in data.draw(st.lists(st.sampled_from(BUDGETS), unique=True, max_size=3)))
    profile = data.draw(st.sampled_from(["x86-cpu", "rpi5", "nope", ""]))
    text = (f'[[model]]\npath = "m.keras"\n{model_keys}\n\n[[target]]\nprofile = "{profile}"\n\n'
            f"[budgets]\n{budget_keys}\n")
    if data.draw(st.integers(0, 5)) == 0:
        text = text[:data.draw(st.integers(0, len(text)))]  # cut anywhere: TOML syntax errors too
    (case / "edgec.toml").write_text(text)
    code, stdout, err = invoke("ci", "plan", case / "edgec.toml")
    check(code, stdout, err, as_json=True)


@pytest.mark.slow
@settings(max_examples=examples(2), **SETTINGS)
@given(data=st.data())
def test_ci_run_with_hostile_data(data, digits_model_path, tmp_path, private_tmp):
    """A row whose data is hostile is a failed row (exit 1) with its reason, in a strict JSON report."""
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copy(digits_model_path, case / "m.keras")
    calib = data.draw(data_file(case, "calib"))
    (case / "edgec.toml").write_text(f'[[model]]\npath = "m.keras"\ncalib = "{calib.name}"\n\n'
                                     '[[target]]\nprofile = "x86-cpu"\nprecision = "int8"\n')
    code, stdout, err = invoke("ci", "run", case / "edgec.toml", "--no-cache", "--out", case / "dist",
                               "--json", case / "report.json")
    check(code, stdout, err, as_json=False)
    if (case / "report.json").exists():
        report = strict_loads((case / "report.json").read_text())
        assert all(r["status"] in ("passed", "failed", "error") for r in report["rows"])
    assert not list((case / "dist").rglob(".*tmp-*")) if (case / "dist").exists() else True
    assert left_in(private_tmp) == []

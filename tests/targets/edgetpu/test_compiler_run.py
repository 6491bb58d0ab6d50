"""Running edgetpu_compiler: the real binary when present, else the subprocess plumbing.

The plumbing tests put a test double named ``edgetpu_compiler`` on PATH. It is a boundary this
host cannot cross (the compiler comes from Coral's apt repository, x86-64 only): the double only
records its arguments and prints, byte for byte, real compiler output from fixtures/ (see
fixtures/README.md for where each copy comes from), then exits with the status given.
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
import sys

import pytest

import edgec
from edgec.errors import CheckFailed
from tests.helpers.edgetpu import FIXTURES, fixture_text

REAL = shutil.which("edgetpu_compiler")


def _fake_compiler(tmp_path, fixture: str, exit_code: int):
    """Put the recording test double on PATH; returns the file its argv is written to."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    argv_file = tmp_path / "argv.txt"
    script = bindir / "edgetpu_compiler"
    script.write_text(
        f"#!{sys.executable}\n"
        "# Test double: prints a verbatim copy of real edgetpu_compiler output (tests/targets/edgetpu/fixtures).\n"
        "import sys\n"
        f"open({str(argv_file)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        f"sys.stdout.write(open({str(FIXTURES / fixture)!r}).read())\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bindir, argv_file


@pytest.fixture
def on_path(monkeypatch, tmp_path):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the compiler is invoked only on x86-64 hosts")

    def install(fixture: str, exit_code: int):
        bindir, argv = _fake_compiler(tmp_path, fixture, exit_code)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        return argv

    return install


def _build(digits_dir, out, target="coral-usb", **kw):
    return edgec.build(digits_dir / "digits_cnn.keras", target=target, calib=str(digits_dir / "calib.npz"),
                       calib_samples=50, out=out, **kw)


@pytest.mark.skipif(REAL is not None, reason="a real edgetpu_compiler is installed; the double is not needed")
def test_failed_compile_is_recorded_with_the_compilers_log(on_path, digits_dir, tmp_path):
    argv = on_path("v16_failed_large_activations.txt", 1)
    result = _build(digits_dir, tmp_path / "dist")
    args = argv.read_text().splitlines()
    assert args[:8] == ["-s", "-m", "14", "-t", "180", "-o", ".", "model.tflite"]
    c = result.manifest["edgetpu"]["compiler"]
    assert c["status"] == "failed" and c["returncode"] == 1 and c["version"] == "16.0.384591198"
    assert "large activation tensors" in c["reason"]
    assert c["command"].endswith(f"-o {tmp_path / 'dist' / 'coral-usb'} {tmp_path / 'dist' / 'coral-usb' / 'model_int8.tflite'}")
    d = result.out_dir
    assert (d / "edgetpu_compiler.log").read_text().startswith(fixture_text("v16_failed_large_activations.txt"))
    assert not (d / "model_edgetpu.tflite").exists() and not (d / ".edgetpu").exists()
    assert [a["file"] for a in result.manifest["artifacts"]] == ["model_int8.tflite", "edgetpu_report.json",
                                                                 "edgetpu_compiler.log"]


@pytest.mark.skipif(REAL is not None, reason="a real edgetpu_compiler is installed; the double is not needed")
def test_require_compiler_turns_a_failed_compile_into_exit_1(on_path, digits_dir, tmp_path):
    on_path("v16_failed_op_version.txt", 1)
    with pytest.raises(CheckFailed, match=r"Didn't find op for builtin opcode 'QUANTIZE'"):
        _build(digits_dir, tmp_path / "dist", require_compiler=True)
    assert not (tmp_path / "dist" / "coral-usb").exists()


@pytest.mark.skipif(REAL is not None, reason="a real edgetpu_compiler is installed; the double is not needed")
def test_success_text_without_an_output_model_is_not_trusted(on_path, digits_dir, tmp_path):
    on_path("v16_console_yolov5s_224.txt", 0)
    c = _build(digits_dir, tmp_path / "dist").manifest["edgetpu"]["compiler"]
    assert c["status"] == "failed" and "wrote no *_edgetpu.tflite" in c["reason"]


@pytest.mark.skipif(REAL is not None, reason="a real edgetpu_compiler is installed; the double is not needed")
def test_dual_tpu_profile_segments_the_model(on_path, digits_dir, tmp_path):
    argv = on_path("v16_failed_large_activations.txt", 1)
    result = _build(digits_dir, tmp_path / "dist", target="coral-dual-m2")
    assert "--num_segments=2" in argv.read_text().splitlines()
    assert "--num_segments=2" in result.manifest["edgetpu"]["compiler"]["command"]
    assert result.manifest["edgetpu"]["analysis"]["cache_bytes"] == 2 * 8 * 2**20


def test_non_x86_host_says_where_the_compiler_runs(monkeypatch, digits_dir, tmp_path):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(CheckFailed, match="runs only on x86-64"):
        _build(digits_dir, tmp_path / "a", require_compiler=True)
    c = _build(digits_dir, tmp_path / "b").manifest["edgetpu"]
    assert c["compiled"] is False and "x86-64" in c["compiler"]["reason"] and "aarch64" in c["compiler"]["reason"]
    assert c["compiler"]["command"].startswith("edgetpu_compiler -s -m 14 -t 180 -o ")


@pytest.mark.edgetpu
@pytest.mark.skipif(REAL is None, reason="edgetpu_compiler is not on PATH (Coral apt repository, x86-64 Linux only)")
def test_real_compiler(digits_dir, tmp_path):
    result = _build(digits_dir, tmp_path / "dist", require_compiler=True)
    m = result.manifest
    c = m["edgetpu"]["compiler"]
    assert m["edgetpu"]["compiled"] and c["status"] == "compiled" and c["version"]
    d = result.out_dir
    assert (d / "model_edgetpu.tflite").is_file() and b"edgetpu-custom-op" in (d / "model_edgetpu.tflite").read_bytes()
    assert m["artifacts"][0]["file"] == "model_edgetpu.tflite" and m["artifacts"][0]["role"] == "edgetpu_model"
    assert c["totals"]["ops"] == m["edgetpu"]["analysis"]["ops"]
    assert c["disagreements"] == [], c["disagreements"]

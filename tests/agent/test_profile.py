"""`edgec profile --device local` (the agent zipapp run by a Python here), the SQLite store and
`edgec report` in every format with its plot."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from edgec.errors import EdgecError
from edgec.measure import parse_report
from edgec.results import ResultsStore, default_path
from edgec.shipment import plan
from tests.helpers.cli import run_cli


@pytest.fixture(scope="module")
def profiled(digits_builds, tmp_path_factory):
    """fp32 and int8 measured in one `edgec profile` run, stored in a fresh database."""
    db = tmp_path_factory.mktemp("db") / "results.db"
    proc = run_cli("profile", digits_builds["fp32"], digits_builds["int8"], "--device", "local", "--runs", "300",
                   "--db", db)
    assert proc.returncode == 0, proc.stderr
    return db, proc.stdout


def test_profile_shows_percentiles_and_speedup(profiled):
    db, out = profiled
    for column in ("min ms", "median ms", "mean ms", "p90 ms", "p99 ms", "inferences/s", "speedup x", "compression x"):
        assert column in out
    assert "latency over 300 runs" in out and ("power: unavailable" in out or "power (" in out)
    rows = ResultsStore(db).rows()
    assert [r["precision"] for r in sorted(rows, key=lambda r: r["id"])] == ["fp32", "int8"]
    fp32, int8 = sorted(rows, key=lambda r: r["id"])
    speedup = fp32["latency_median_ms"] / int8["latency_median_ms"]
    assert f"{speedup:.2f}" in out.split("against the fp32 artifact")[1]
    assert all(r["device"] == "local" and r["runs"] == 300 and r["threads"] == 2 for r in rows)


def test_store_keeps_the_manifest_and_the_report(profiled, digits_builds):
    db, _ = profiled
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        manifest, build_dir, accuracy = conn.execute(
            "SELECT manifest, build_dir, accuracy FROM artifacts WHERE precision = 'int8'").fetchone()
        report = json.loads(conn.execute("SELECT report FROM results ORDER BY id DESC").fetchone()[0])
    on_disk = json.loads((digits_builds["int8"] / "manifest.json").read_text())
    assert json.loads(manifest) == on_disk and Path(build_dir) == digits_builds["int8"].resolve()
    assert accuracy == on_disk["artifacts"][0]["verification"]["artifact_accuracy"]
    assert report["schema_version"] == 1 and report["artifact"]["sha256"] == on_disk["artifacts"][0]["sha256"]


def test_report_formats(profiled, digits_builds):
    db, _ = profiled
    proc = run_cli("report", "--db", db, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["precision"]: r for r in json.loads(proc.stdout)["rows"]}
    fp32, int8 = rows["fp32"], rows["int8"]
    assert int8["speedup_vs_fp32"] == pytest.approx(fp32["latency_median_ms"] / int8["latency_median_ms"])
    assert int8["compression_vs_fp32"] == pytest.approx(fp32["bytes"] / int8["bytes"])
    assert int8["compression_vs_fp32"] > 2  # int8 weights: about a quarter of fp32
    assert fp32["speedup_vs_fp32"] == 1.0 and int8["baseline_result_id"] == fp32["result_id"]
    assert int8["accuracy_pct"] > 90 and int8["energy_mj"] is None  # no sensor here: nothing invented

    csv_out = run_cli("report", "--db", db, "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert {r["precision"] for r in parsed} == {"fp32", "int8"} and "speedup_vs_fp32" in parsed[0]

    md = run_cli("report", "--db", db, "--format", "markdown").stdout.splitlines()
    assert md[0].startswith("| model | device |") and len(md) == 4 and md[1].startswith("|---")

    table = run_cli("report", "--db", db)
    assert table.returncode == 0 and "speedup x" in table.stdout and "digits_cnn" in table.stdout


def test_report_plot_is_a_png(profiled, tmp_path):
    from PIL import Image

    db, _ = profiled
    png = tmp_path / "plots" / "pareto.png"
    proc = run_cli("report", "--db", db, "--format", "csv", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 400
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 50  # points, labels and axes, not a blank canvas
    bad = run_cli("report", "--db", db, "--plot", tmp_path / "plot.jpg")
    assert bad.returncode == 2 and "expected a .png" in bad.stderr


def test_json_output_and_no_store(digits_builds, tmp_path):
    db = tmp_path / "none.db"
    proc = run_cli("profile", digits_builds["int8"], "--runs", "20", "--json", "--no-store", "--db", db)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert result["result_id"] is None and result["report"]["latency_ms"]["count"] == 20
    assert not db.exists()


def test_profile_errors(digits_builds, tmp_path):
    not_a_build = run_cli("profile", tmp_path)
    assert not_a_build.returncode == 2 and not_a_build.stderr.startswith("Error: no manifest.json in")
    device = run_cli("profile", digits_builds["int8"], "--device", "jetson")
    assert device.returncode == 2 and "expected local or ssh://user@host[:port]" in device.stderr
    both = run_cli("profile", digits_builds["int8"], "--runs", "5", "--min-seconds", "1")
    assert both.returncode == 2 and "not both" in both.stderr
    url = run_cli("profile", digits_builds["int8"], "--device", "ssh://host:notaport")
    assert url.returncode == 2 and "invalid port" in url.stderr
    for proc in (not_a_build, device, both, url):
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_absent_runtime_on_the_device_is_one_line(digits_builds):
    import importlib.util

    if importlib.util.find_spec("tflite_runtime") is not None:
        pytest.skip("tflite_runtime is installed here")
    proc = run_cli("profile", digits_builds["int8"], "--runtime", "tflite", "--runs", "5")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: the agent on local could not measure model.tflite: LiteRT absent")


def test_modified_artifact_is_refused(digits_builds, tmp_path):
    copy = tmp_path / "x86-cpu"
    shutil.copytree(digits_builds["int8"], copy)
    with open(copy / "model.tflite", "ab") as fh:
        fh.write(b"\0")
    proc = run_cli("profile", copy, "--runs", "5")
    assert proc.returncode == 2 and "was modified after the build" in proc.stderr


def test_missing_python_on_the_device(digits_builds, tmp_path):
    proc = run_cli("profile", digits_builds["int8"], "--python", str(tmp_path / "python3"))
    assert proc.returncode == 2 and "not found on local" in proc.stderr


def test_report_without_results(tmp_path):
    proc = run_cli("report", "--db", tmp_path / "empty.db")
    assert proc.returncode == 2 and "no results database" in proc.stderr


def test_default_database_location(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEC_RESULTS_DB", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path() == tmp_path / ".local" / "share" / "edgec" / "results.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_path() == tmp_path / "data" / "edgec" / "results.db"
    monkeypatch.setenv("EDGEC_RESULTS_DB", str(tmp_path / "x.db"))
    assert ResultsStore().path == tmp_path / "x.db"


def test_newer_database_is_refused(tmp_path):
    db = tmp_path / "r.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(EdgecError, match="version 99, newer than this edgec"):
        ResultsStore(db).rows()


def test_parse_report_skips_native_noise():
    assert parse_report('INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n{"a": 1}\n') == {"a": 1}
    with pytest.raises(EdgecError, match="printed no JSON report"):
        parse_report("Segmentation fault")


def _build_dir(tmp_path, files, runtime, target):
    from edgec.util import sha256_file

    d = tmp_path / "build"
    d.mkdir()
    records = []
    for name, role, fmt in files:
        (d / name).write_bytes(name.encode())
        records.append({"file": name, "role": role, "format": fmt, "precision": "int8",
                        "sha256": sha256_file(d / name), "bytes": len(name)})
    # what the target kind records at build time for shipping
    from edgec import targets
    from edgec.targets.base import Artifact

    shipment = targets.get(target).shipment(d, [Artifact(name, role, fmt) for name, role, fmt in files])
    manifest = {"schema_version": 1, "runtime": runtime, "target": target, "artifacts": records, "shipment": shipment}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d, manifest


def test_plan_edgetpu_build(tmp_path):
    d, m = _build_dir(tmp_path, [("model_edgetpu.tflite", "edgetpu_model", "tflite"),
                                 ("model_int8.tflite", "model", "tflite")], "edgetpu", "edgetpu")
    ship = plan(d, m)
    assert ship.runtime == "edgetpu" and ship.target == "model_edgetpu.tflite" and not ship.warnings


def test_plan_edgetpu_build_without_compiler(tmp_path):
    d, m = _build_dir(tmp_path, [("model_int8.tflite", "model", "tflite")], "edgetpu", "edgetpu")
    ship = plan(d, m)
    assert ship.runtime == "litert" and ship.target == "model_int8.tflite"
    assert "no Edge TPU model in this build" in ship.warnings[0]


def test_plan_tensorrt_bundle(tmp_path):
    d, m = _build_dir(tmp_path, [("model.onnx", "onnx", "onnx")], "tensorrt", "tensorrt")
    (d / "build.json").write_text(json.dumps({"format": "edgec-tensorrt-build", "version": 1, "onnx": "model.onnx"}))
    ship = plan(d, m)
    assert ship.runtime == "tensorrt" and ship.target == "bundle"
    assert sorted(ship.files) == ["bundle/build.json", "bundle/model.onnx"]
    assert ship.record["file"] == "model.onnx"
    (d / "model.engine").write_bytes(b"engine")
    assert "bundle/model.engine" in plan(d, m).files


def test_help_is_light():
    import subprocess

    for cmd in (["profile", "--help"], ["report", "--help"], ["agent", "bundle", "--help"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgec", *cmd], capture_output=True, text=True)
        assert proc.returncode == 0
        imported = {ln.split("|")[-1].strip().split(".")[0] for ln in proc.stderr.splitlines() if "|" in ln}
        assert not imported & {"tensorflow", "matplotlib", "numpy", "onnxruntime", "ai_edge_litert", "sqlite3"}, cmd


def test_energy_reaches_the_report_and_the_plot(digits_builds, tmp_path):
    """A report with measured power (INA3221 fixture tree of an Orin Nano, JetPack 6) stored and
    reported: energy per inference in the rows and a third plot panel."""
    from PIL import Image

    from edgec.agent import bench
    from edgec.report import load_rows, plot
    from tests.helpers.agent import FIXTURES

    store = ResultsStore(tmp_path / "r.db")
    for precision in ("fp32", "int8"):
        build = digits_builds[precision]
        manifest = json.loads((build / "manifest.json").read_text())
        report = bench.run_benchmark(str(build / "model.tflite"), runs=50, idle_seconds=0.1, power_min_seconds=0.2,
                                     root=str(FIXTURES / "jetson-orin-nano-jp6"))
        store.add(manifest, manifest["artifacts"][0], build, "ssh://nvidia@orin-nano", report)
    rows = load_rows(tmp_path / "r.db")
    for row in rows:
        assert row["power_available"] and row["power_active_w"] == pytest.approx(5.088 * 1.016)
        assert row["energy_mj"] == pytest.approx(row["power_active_w"] / row["throughput_ips"] * 1000)
    png = plot(rows, tmp_path / "energy.png")
    with Image.open(png) as image:
        assert image.width > 1.4 * 1100  # three panels: accuracy/latency, latency/size, accuracy/energy


def test_profile_and_report_pick_one_baseline_and_say_when_threads_differ(digits_builds, tmp_path):
    """fp32 with 1 thread, int8 with 2: both commands compare int8 with the same fp32 result, and
    both say the speed-up is not like for like."""
    db = tmp_path / "results.db"
    fp32 = run_cli("profile", digits_builds["fp32"], "--device", "local", "--runs", "50", "--threads", "1", "--db", db)
    assert fp32.returncode == 0, fp32.stderr
    int8 = run_cli("profile", digits_builds["int8"], "--device", "local", "--runs", "50", "--threads", "2", "--db", db,
                   "--json")
    assert int8.returncode == 0, int8.stderr
    doc = json.loads(int8.stdout)["results"][0]
    assert doc["threads_differ"] and doc["baseline_threads"] == 1
    rows = ResultsStore(db).rows()
    fp32_row = next(r for r in rows if r["precision"] == "fp32")
    assert doc["baseline"] == f"result {fp32_row['id']}"
    report = run_cli("report", "--db", db, "--format", "json")
    int8_row = next(r for r in json.loads(report.stdout)["rows"] if r["precision"] == "int8")
    assert int8_row["baseline_result_id"] == fp32_row["id"] and int8_row["baseline_threads"] == 1
    assert int8_row["speedup_vs_fp32"] == pytest.approx(doc["speedup_vs_fp32"])
    table = run_cli("report", "--db", db)
    assert "note:" in table.stdout and "not like for like" in table.stdout
    again = run_cli("profile", digits_builds["int8"], "--device", "local", "--runs", "50", "--threads", "2", "--db", db)
    assert "not like for like" in again.stdout and "--threads" in again.stdout

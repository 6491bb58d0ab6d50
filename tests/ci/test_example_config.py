"""examples/edgec.toml: the bundled digits models (CNN, residual, separable) for three devices."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers.cli import REPO, run_cli


@pytest.mark.slow
def test_example_config_builds_and_passes(digits_dir, digits_split, tmp_path):
    from edgec.examples import make_model, train

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    models = tmp_path / "build" / "examples"
    models.mkdir(parents=True)
    for name in ("digits_cnn.keras", "calib.npz", "eval.npz", "train.npz"):
        shutil.copy(digits_dir / name, models / name)
    for arch in ("residual", "separable"):
        model = make_model(arch)
        train(model, digits_split, epochs=15, seed=0)
        model.save(models / f"digits_{arch}.keras")
    proc = run_cli("ci", "examples/edgec.toml", "--out", "build/examples/dist", "--no-cache",
                   "--json", "build/results.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "build" / "results.json").read_text())
    assert [r["id"] for r in doc["rows"]] == [f"{m}/{t}" for m in ("cnn", "residual", "separable")
                                              for t in ("rpi5", "coral-usb", "jetson-orin-nano")]
    assert doc["verdict"] == "passed" and doc["summary"]["budgets"]["failed"] == 0
    for row in doc["rows"]:
        assert (tmp_path / row["out_dir"] / "manifest.json").is_file()
        names = {v["name"] for v in row["budgets"]}
        assert {"max_accuracy_drop", "max_bytes"} <= names
        assert ("min_edgetpu_op_share" in names) == (row["target"] == "coral-usb")

"""One build, several targets: shared stages, and the bytes of a build for each target alone."""

from __future__ import annotations

import json

import pytest

import edgec
from edgec.errors import EdgecError
from edgec.util import sha256_file
from tests.helpers.cli import run_cli

TARGETS = ["rpi5", "coral-usb", "jetson-orin-nano"]


def _comparable(manifest: dict) -> dict:
    """A manifest without what differs from run to run: when it was written, how long it took."""
    skip = {"created", "timings_s"}
    out = {k: v for k, v in manifest.items() if k not in skip}
    if out.get("optimization"):
        out["optimization"] = {k: v for k, v in out["optimization"].items() if k not in ("seconds", "step_details")}
    return out


@pytest.mark.slow
def test_several_targets_share_work_and_write_what_single_builds_write(digits_dir, tmp_path):
    opts = dict(fine_tune=str(digits_dir / "train.npz"), prune=0.5, qat=True, epochs=1,
                eval=str(digits_dir / "eval.npz"))
    out = tmp_path / "dist"
    results = edgec.build(digits_dir / "digits_cnn.keras", target=TARGETS, out=out, **opts)
    assert [r.out_dir for r in results] == [out / t for t in TARGETS]
    # loaded and evaluated once; fine-tuned once per QAT scheme: TF-MOT's default (rpi5, coral-usb)
    # and TensorRT's symmetric one
    assert [r.reused for r in results] == [(), ("load", "optimize"), ("load",)]
    assert results[0].manifest["optimization"]["step_details"] == results[1].manifest["optimization"]["step_details"]
    multi = tmp_path / "multi"
    out.rename(multi)
    # each target alone, in a fresh process, into the same directory: the same files, byte for
    # byte, and the same manifest but for when it was written and how long it took
    for target in ("coral-usb", "jetson-orin-nano"):
        proc = run_cli("build", digits_dir / "digits_cnn.keras", "--target", target, "--out", out,
                       "--fine-tune", digits_dir / "train.npz", "--prune", "0.5", "--qat", "--epochs", "1",
                       "--eval", digits_dir / "eval.npz")
        assert proc.returncode == 0, proc.stderr
        files = sorted(p.name for p in (multi / target).iterdir() if p.name != "manifest.json")
        assert files == sorted(p.name for p in (out / target).iterdir() if p.name != "manifest.json")
        assert {f: sha256_file(multi / target / f) for f in files} == {f: sha256_file(out / target / f) for f in files}
        assert _comparable(json.loads((multi / target / "manifest.json").read_text())) == \
            _comparable(json.loads((out / target / "manifest.json").read_text()))


def test_targets_are_checked_before_any_work(digits_dir, tmp_path, cli_runner):
    with pytest.raises(EdgecError, match="target 'rpi5' is given twice"):
        edgec.build(digits_dir / "digits_cnn.keras", target=["rpi5", "rpi5"], calib=str(digits_dir / "calib.npz"))
    code, _, err = cli_runner("build", digits_dir / "digits_cnn.keras", "--target", "rpi5", "--target", "coral-usb",
                              "--precision", "fp32", "--out", tmp_path)
    assert code == 2 and "the Edge TPU runs only full-integer" in err
    assert not any(tmp_path.iterdir())


def test_two_targets_from_the_cli(digits_dir, tmp_path):
    proc = run_cli("build", digits_dir / "digits_cnn.keras", "--target", "x86-cpu", "--target", "rpi5",
                   "--precision", "fp32", "--eval", digits_dir / "eval.npz", "--out", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    manifests = json.loads(proc.stdout)
    assert [m["profile"]["id"] for m in manifests] == ["x86-cpu", "rpi5"]
    assert (tmp_path / "x86-cpu" / "model.tflite").is_file() and (tmp_path / "rpi5" / "model.tflite").is_file()
    # the same converter and options: the same bytes for both CPU boards
    assert manifests[0]["artifacts"][0]["sha256"] == manifests[1]["artifacts"][0]["sha256"]

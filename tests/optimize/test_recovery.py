"""Recovery after compression by default (distillation, warm-up + cosine learning rate, BatchNorm
re-estimation, best-epoch restore) and ``--prune auto`` / ``--prune-channels auto``.

The builds use the session's briefly trained nets and few epochs (one seed); the five-seed
figures with the default epochs are bench/bench_recovery.py's.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError
from edgec.optimize import resolve

BUDGET = 1.0  # points


def _fits(manifest: dict) -> dict[str, dict]:
    return {s["step"]: s["fine_tune"] for s in manifest["optimization"]["step_details"] if "fine_tune" in s}


@pytest.mark.slow
def test_prune_qat_on_separable_recovers_by_default(arch_paths, build_with):
    r = build_with(arch_paths["separable"], prune=0.8, qat=True, lr=None)
    m = r.manifest
    fits = _fits(m)
    assert set(fits) == {"prune", "qat"}
    for step, fit in fits.items():
        assert fit["loss"] == "cross-entropy", (step, fit["loss"])  # the architecture is kept
        s = fit["lr_schedule"]
        assert s["kind"] == "warmup_cosine" and 0 < s["warmup_steps"] < s["total_steps"], s
        assert s["final"] < s["peak"]
        assert 1 <= fit["best_epoch"] <= fit["epochs_run"]
    assert m["optimization"]["distill"] is None
    prune = next(s for s in m["optimization"]["step_details"] if s["step"] == "prune")
    assert prune["batchnorm_recalibrated"] > 0
    drop = m["verification"]["accuracy_drop_points"]
    assert drop <= BUDGET, f"int8 artifact drops {drop:.2f} points after --prune 0.8 --qat"


@pytest.mark.slow
def test_channels_on_residual_recovers_by_default(arch_paths, build_with):
    r = build_with(arch_paths["residual"], prune_channels=0.5, precision="fp32", lr=None, epochs=6)
    drop = r.manifest["verification"]["accuracy_drop_points"]
    assert drop <= BUDGET, f"fp32 artifact drops {drop:.2f} points after --prune-channels 0.5"
    assert r.manifest["optimization"]["structure"]["macs"]["cut_percent"] > 40
    # channel surgery cuts the architecture: the float model teaches by default
    assert _fits(r.manifest)["channels"]["loss"].startswith("distillation"), _fits(r.manifest)
    assert r.manifest["optimization"]["distill"] == {"temperature": 4.0, "weight": 0.5}


def test_distill_flag_overrides_the_default(digits_dir, build_with):
    r = build_with(digits_dir / "digits_cnn.keras", prune=0.5, precision="fp32", distill=True, epochs=1)
    assert _fits(r.manifest)["prune"]["loss"].startswith("distillation")
    assert r.manifest["optimization"]["distill"] == {"temperature": 4.0, "weight": 0.5}


@pytest.mark.slow
def test_no_distill_trains_on_the_labels(arch_paths, build_with):
    r = build_with(arch_paths["residual"], prune_channels=0.5, precision="fp32", distill=False, epochs=1, lr=None)
    assert _fits(r.manifest)["channels"]["loss"] == "cross-entropy"
    assert r.manifest["optimization"]["distill"] is None


def test_batchnorm_is_reestimated_after_channel_surgery(arch_paths, digits_split):
    """The rebuilt model's BatchNorm moving statistics become those of its own inputs."""
    from edgec.optimize import channels, graph
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    model = keras.models.load_model(arch_paths["residual"], compile=False)
    smaller = channels.rebuild(model, channels.analyse(model, 0.5))
    norms = [layer for layer in smaller.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [layer.moving_mean.numpy().copy() for layer in norms]
    x = digits_split.x_train[:256]
    assert graph.recalibrate_batchnorm(smaller, x) == len(norms) > 0
    changed = 0
    for layer, old in zip(norms, before, strict=True):
        seen = np.asarray(keras.Model(smaller.inputs, layer.input)(x, training=False))
        mean, var = seen.mean(axis=(0, 1, 2)), seen.var(axis=(0, 1, 2))
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-2, atol=1e-4)
        changed += not np.allclose(old, layer.moving_mean.numpy(), atol=1e-4)
    assert changed > 0


def test_best_epoch_is_the_lowest_held_out_loss():
    """A held-out slice's accuracy moves in steps of one sample and saturates: an early epoch at the
    top accuracy is not kept over later ones with a lower held-out loss, and the patience counts
    epochs without a lower loss."""
    from edgec.optimize.train import _best_weights
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    best = _best_weights(start=1, patience=2)
    best.set_model(model)
    # epoch: (held-out loss, held-out accuracy); epoch 0 is before ``start`` (pruning ramp)
    logs = [(0.1, 1.0), (0.9, 0.99), (0.6, 0.98), (0.4, 0.98), (0.45, 0.99), (0.4, 0.97), (0.5, 0.99)]
    for epoch, (loss, acc) in enumerate(logs):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        best.on_epoch_end(epoch, {"val_loss": loss, "val_accuracy": acc})
        if model.stop_training:
            break
    assert best.best_epoch == 3 and best.best == (0.4, 0.98)
    assert epoch == 5 and model.stop_training  # epochs 4 and 5 found no lower loss (0.4 at 0.97 is no better)
    best.on_train_end()
    assert all((w == 3).all() for w in model.get_weights())


@pytest.mark.slow
def test_prune_auto_picks_the_highest_level_within_the_budget(digits_dir, build_with, cli_runner):
    r = build_with(digits_dir / "digits_cnn.keras", prune="auto", max_accuracy_drop=BUDGET, precision="fp32",
                   epochs=2)
    o = r.manifest["optimization"]
    a = o["auto"]
    assert a["option"] == "--prune" and a["max_accuracy_drop"] == BUDGET
    levels = [c["level"] for c in a["curve"]]
    assert 2 <= len(levels) <= 3 and levels == sorted(levels) and set(levels) <= set(a["levels"])
    within = [c["level"] for c in a["curve"] if c["drop_points"] <= BUDGET]
    assert a["within_budget"] == bool(within)
    if within:
        assert a["chosen"] == max(within)
        # nothing measured above the choice is within the budget, and its neighbour above was measured
        above = [c for c in a["curve"] if c["level"] > a["chosen"]]
        assert all(c["drop_points"] > BUDGET for c in above)
        assert above or a["chosen"] == a["levels"][-1]
    assert o["prune"]["sparsity"] == a["chosen"]
    chosen = next(c for c in a["curve"] if c["level"] == a["chosen"])
    prune = next(s for s in o["step_details"] if s["step"] == "prune")
    assert prune["accuracy"] == chosen["accuracy"]  # the build exports the model the search measured


@pytest.mark.parametrize("options, message", [
    ({"prune": "auto"}, "--prune auto searches the highest level within an accuracy budget: add --max-accuracy-drop"),
    ({"prune_channels": "auto"}, "--prune-channels auto searches the highest level"),
    ({"prune": "auto", "max_accuracy_drop": 1.0, "eval": None}, "add --eval DATA"),
    ({"prune": "auto", "prune_channels": "auto", "max_accuracy_drop": 1.0}, "search one of them"),
    ({"prune": "auto", "max_accuracy_drop": 1.0, "prune_structure": "2:4"}, "--prune auto searches unstructured"),
    ({"prune": "most"}, "--prune takes a number or 'auto', got 'most'"),
])
def test_auto_needs_a_budget_and_eval_data(options, message):
    with pytest.raises(EdgecError) as err:
        resolve(BuildOptions(**{"fine_tune": "train.npz", "eval": "eval.npz", **options}), Precision.FP32)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_auto_spec_searches_the_levels():
    spec = resolve(BuildOptions(fine_tune="t.npz", eval="e.npz", prune_channels="auto", max_accuracy_drop=0.5),
                   Precision.FP32)
    assert spec.auto == "prune_channels" and spec.max_accuracy_drop == 0.5 and spec.steps == ["channels"]
    assert spec.to_json()["auto"] == {"option": "--prune-channels", "max_accuracy_drop": 0.5}


@pytest.mark.parametrize("args, message", [
    (["--prune", "auto"], "Error: --prune auto searches the highest level within an accuracy budget"),
    (["--prune-channels", "auto", "--max-accuracy-drop", "1"], "Error: --prune-channels auto measures"),
])
def test_cli_auto_errors_are_one_line(digits_dir, cli_runner, tmp_path, args, message):
    argv = ["build", digits_dir / "digits_cnn.keras", "--target", "rpi5", "--precision", "fp32",
            "--fine-tune", digits_dir / "train.npz", "--out", tmp_path / "d", *args]
    if "--max-accuracy-drop" not in args:
        argv += ["--eval", digits_dir / "eval.npz"]
    code, out, err = cli_runner(*argv)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("Error")]) == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_cli_prints_the_channel_curve_it_measured(digits_dir, cli_runner, tmp_path):
    import json

    code, out, err = cli_runner("build", digits_dir / "digits_cnn.keras", "--target", "rpi5", "--precision", "fp32",
                                "--fine-tune", digits_dir / "train.npz", "--eval", digits_dir / "eval.npz",
                                "--prune-channels", "auto", "--max-accuracy-drop", "5", "--epochs", "1",
                                "--out", tmp_path / "d")
    a = json.loads((tmp_path / "d" / "rpi5" / "manifest.json").read_text())["optimization"]["auto"]
    assert code == (0 if a["within_budget"] else 1), (out, err)
    assert a["option"] == "--prune-channels" and a["levels"] == [0.25, 0.375, 0.5, 0.625, 0.75]
    shown = ", ".join(f"{c['level']:g} -> {c['drop_points']:.2f}" for c in a["curve"])
    assert f"--prune-channels auto: {a['chosen']:g} (budget 5 points; measured level -> drop: {shown})" in \
        " ".join(out.split())

"""--builder: the model's own hyperparameters in the search, trained in each trial, with
Hyperband on the training epochs and constraints checked on the untrained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.search import bracket_zero_name, enqueue, write_space

pytest.importorskip("optuna")

BUILDER = f"{Path(__file__).parent / 'builders.py'}:small_net"
SPACE = """
[space]
precision = "int8"
prune_structure = "none"
prune = 0
cluster = "none"
quantization = "ptq"
epochs = 3
train_optimizer = "adam"
train_lr = [0.01, 0.00001]
train_batch_size = 32
train_epochs = 2

[hyperband]
reduction_factor = 2
"""


def _request(data, tmp_path, device, **changes):
    from edgec.search.api import Request

    fields = dict(target="x86-cpu", eval=str(data["eval"]), builder=BUILDER, train=str(data["train"]),
                  calib=str(data["calib"]), trials=2, space=write_space(tmp_path / "space.toml", SPACE),
                  device=device, out=tmp_path / "search", heartbeat=2, sampler="random")
    fields.update(changes)
    return Request(**fields)


def test_builder_models_are_trained_and_judged_at_training_rungs(data, tmp_path, quick_device):
    from edgec.search import api

    name = bracket_zero_name(2, eta=2)
    request = _request(data, tmp_path, quick_device, study=name)
    hp = {"model.width": 8, "model.depth": 1, "model.activation": "relu"}
    enqueue(request, ["maximize", "minimize", "minimize"], [{**hp, "train_lr": 0.01}, {**hp, "train_lr": 0.00001}],
            name=name)
    doc = api.run(request)
    good, bad = doc["trials"]
    assert good["state"] == "COMPLETE", good
    assert good["hp"] == {"width": 8, "depth": 1, "activation": "relu"}
    assert good["training"] == {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "epochs": 2}
    assert good["training_result"]["epochs_run"] == 2
    # the model built and verified is the model trained: its float accuracy on the eval data
    assert good["result"]["float_accuracy"] == pytest.approx(good["training_result"]["accuracy"], abs=0.01)
    assert good["timings"]["train"] > 0 and good["result"]["accuracy"] > 50
    assert bad["state"] == "PRUNED" and bad["stopped"]["stage"] == "train" and bad["stopped"]["rung"] == "train@1"
    assert bad["training_result"]["stopped_at"] == 1 and bad["training_result"]["epochs_run"] == 1
    assert doc["baselines"] == [] and doc["settings"]["mode"] == "builder"
    assert "width=8 depth=1 activation=relu | train adam lr 1e-02 b32 e2 | int8 ptq" == good["label"]
    models = sorted(p.name for p in (request.out / "models").iterdir())
    assert len([m for m in models if m.endswith(".keras")]) == 1  # the stopped model is not kept


def test_builder_constraints_are_checked_before_training(data, tmp_path, quick_device):
    from edgec.search import api

    request = _request(data, tmp_path, quick_device, trials=1, max_bytes=2_000)
    doc = api.run(request)
    (trial,) = doc["trials"]
    assert trial["state"] == "PRUNED" and trial["stopped"]["stage"] == "probe"
    assert "training_result" not in trial  # never trained (the builder only made the model)
    assert [p.name.endswith("-init.keras") for p in (request.out / "models").glob("*.keras")] == [True]

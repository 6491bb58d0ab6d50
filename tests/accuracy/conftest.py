"""Models for accuracy-aware int8: the digits CNN with an outlier unit (plain int8 loses points),
and eval data without labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

OUTLIER_RATIO = 200.0


@pytest.fixture(scope="session")
def outlier_model_path(digits_dir, digits_split) -> Path:
    """The digits CNN with one hidden unit 200x the others' range: the same float outputs, a plain
    int8 model that loses several points."""
    from edgec.examples import with_outlier_unit
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    model = keras.models.load_model(digits_dir / "digits_cnn.keras", compile=False)
    outlier = with_outlier_unit(model, digits_split.x_train, OUTLIER_RATIO)
    x = digits_split.x_test
    assert np.abs(outlier.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-3
    path = digits_dir / "digits_cnn_outlier.keras"
    outlier.save(path)
    return path


@pytest.fixture(scope="session")
def unlabelled_eval(digits_dir, digits_split) -> Path:
    path = digits_dir / "eval_unlabelled.npz"
    np.savez(path, x=digits_split.x_test)
    return path


def litert_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """A bare LiteRT loop, one sample per invoke: accuracy and the float logits."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    if list(i["shape"][:1]) != [1]:
        it.resize_tensor_input(i["index"], [1, *i["shape"][1:]])
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = i["quantization"], o["quantization"]
    info = np.iinfo(i["dtype"])
    logits = []
    for sample in x:
        it.set_tensor(i["index"], np.clip(np.round(sample[None] / s_in + z_in), info.min, info.max).astype(i["dtype"]))
        it.invoke()
        logits.append((it.get_tensor(o["index"]).astype(np.float32) - z_out) * s_out)
    out = np.concatenate(logits)
    return float((out.argmax(1) == y).mean()), out

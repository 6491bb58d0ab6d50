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

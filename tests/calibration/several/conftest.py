"""Two-input models (an 8x8 digit image and a float side vector) and their data, made once per
session: a tf-keras model trained here and a Keras 3 one made in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def side_features(x: np.ndarray) -> np.ndarray:
    """Four float features of each image (mean ink per quadrant, scaled by 10): a side input
    whose range is not the image's."""
    q = [x[:, :4, :4], x[:, :4, 4:], x[:, 4:, :4], x[:, 4:, 4:]]
    return np.stack([part.mean(axis=(1, 2, 3)) * 10.0 for part in q], axis=1).astype(np.float32)


@pytest.fixture(scope="session")
def multi_data(tmp_path_factory, digits_split) -> Path:
    """calib.npz (image as uint8 pixels), eval.npz and train.npz (floats, labelled), keyed 'image'
    and 'side', and multi_data.py (functions yielding dicts)."""
    out = tmp_path_factory.mktemp("multi_input")
    s = digits_split
    x_tr, x_te = s.x_train[:600], s.x_test[:200]
    y_tr, y_te = s.y_train[:600], s.y_test[:200]
    np.savez(out / "train.npz", image=x_tr, side=side_features(x_tr), y=y_tr)
    np.savez(out / "eval.npz", image=x_te, side=side_features(x_te), y=y_te)
    # the image as 8-bit pixels: the build's preprocessing (0..1) applies to it, not to 'side'
    np.savez(out / "calib.npz", image=np.round(x_tr[:200] * 255).astype(np.uint8), side=side_features(x_tr[:200]))

    (out / "multi_data.py").write_text(
        "import numpy as np\n"
        f"_D = np.load({str(out / 'eval.npz')!r})\n"
        "def batches():\n"
        "    for i in range(0, 200, 50):\n"
        "        yield {'image': _D['image'][i:i + 50], 'side': _D['side'][i:i + 50]}\n"
        "def pairs():\n"
        "    for i in range(0, 200, 50):\n"
        "        yield {'side': _D['side'][i:i + 50], 'image': _D['image'][i:i + 50]}, _D['y'][i:i + 50]\n"
        "def wrong():\n"
        "    yield {'image': _D['image'][:5], 'meta': _D['side'][:5]}\n")
    return out


@pytest.fixture(scope="session")
def multi_dir(multi_data, digits_split) -> Path:
    """``multi_data`` plus two_inputs.keras (tf-keras, inputs 'image' and 'side') and
    k3_two_inputs.keras (Keras 3, the same inputs)."""
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    out = multi_data
    s = digits_split
    x_tr, x_te = s.x_train[:600], s.x_test[:200]
    y_tr, y_te = s.y_train[:600], s.y_test[:200]
    tf.random.set_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    side = keras.Input((4,), name="side")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    v = keras.layers.Dense(8, activation="relu")(side)
    h = keras.layers.Concatenate()([h, v])
    probs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model([image, side], probs, name="two_inputs")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit({"image": x_tr, "side": side_features(x_tr)}, y_tr, epochs=15, batch_size=32, verbose=0)
    _, acc = model.evaluate({"image": x_te, "side": side_features(x_te)}, y_te, verbose=0)
    assert acc > 0.85, f"two-input model trained to only {acc:.3f}"
    model.save(out / "two_inputs.keras")

    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, str(HERE / "make_keras3.py"), str(out / "train.npz"),
                           str(out / "k3_two_inputs.keras")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split("train accuracy")[-1]) > 0.9, proc.stdout
    return out

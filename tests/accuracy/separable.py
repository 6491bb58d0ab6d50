"""A small SeparableConv2D classifier trained on noisy labels, inputs in [-1, 1], and its twin
with one inflated channel between a depthwise and a pointwise convolution (the same float
function; the intermediate tensor's range is set by that one channel, as training with BatchNorm
folding often leaves it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOISE = 0.3
INFLATE = 100.0


def data(seed: int = 0):
    """sklearn digits in [-1, 1]: (x_train, noisy y_train, x_test, clean y_test)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0 * 2.0 - 1.0).astype(np.float32)[..., None]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    train, test = idx[:1200], idx[1200:]
    y = d.target.copy()
    flip = rng.random(len(y)) < NOISE
    noisy = y.copy()
    noisy[flip] = rng.integers(0, 10, int(flip.sum()))
    return x[train], noisy[train], x[test], y[test]


def make(filters=(32, 64, 64), epochs: int = 40, seed: int = 0):
    """The trained classifier: Conv2D -> (SeparableConv2D, BatchNorm, ReLU) x3 -> GAP -> Dense."""
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(seed)
    keras.backend.reset_uids()
    layers = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    for k, f in enumerate(filters):
        h = layers.SeparableConv2D(f, 3, strides=2 if k == 1 else 1, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    out = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out, name="separable_noisy")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y, _, _ = data(seed)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def inflate(model, layer: str = "separable_conv2d_1", factor: float = INFLATE):
    """A copy of ``model`` with depthwise channel 0 of ``layer`` times ``factor`` and the pointwise
    weights reading it divided by it: the same function, a 100x wider intermediate tensor."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    target = twin.get_layer(layer)
    w = target.get_weights()
    w[0][:, :, 0, :] *= factor
    w[1][:, :, 0, :] /= factor
    target.set_weights(w)
    return twin


def write(out: Path, seed: int = 0) -> dict[str, Path]:
    model = make(seed=seed)
    x, _, x_test, y_test = data(seed)
    paths = {"model": out / "separable_noisy.keras", "inflated": out / "separable_inflated.keras",
             "calib": out / "calib.npz", "eval": out / "eval.npz"}
    model.save(paths["model"])
    inflate(model).save(paths["inflated"])
    np.savez(paths["calib"], x=x)
    np.savez(paths["eval"], x=x_test, y=y_test)
    return paths

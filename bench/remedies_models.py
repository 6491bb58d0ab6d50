"""The bench's real-model class for the integer remedies: a mini-Xception (Arriaga et al.'s facial
expression net: two Conv2D stems, four residual modules of SeparableConv2D pairs with a strided 1x1
shortcut, a Conv2D classifier head) trained on sklearn's digits upscaled to 32x32, inputs in
[-1, 1], with 30 % of the training labels replaced by random ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOISE = 0.3
SIZE = 32


def data(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images, np.ones((SIZE // 8, SIZE // 8)))  # nearest upscaling, 8x8 -> 32x32
    x = (x / 16.0 * 2.0 - 1.0).astype(np.float32)[..., None]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    train, test = idx[:1200], idx[1200:]
    y = d.target.copy()
    flip = rng.random(len(y)) < NOISE
    y[flip] = rng.integers(0, 10, int(flip.sum()))
    return x[train], y[train], x[test], d.target[test]


def mini_xception(classes: int = 10, filters=(16, 32, 64, 128)):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    x = inp
    for _ in range(2):
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(x)))
    for f in filters:
        shortcut = L.BatchNormalization()(L.Conv2D(f, 1, strides=2, padding="same", use_bias=False)(x))
        x = L.ReLU()(L.BatchNormalization()(L.SeparableConv2D(f, 3, padding="same", use_bias=False)(x)))
        x = L.BatchNormalization()(L.SeparableConv2D(f, 3, padding="same", use_bias=False)(x))
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        x = L.Add()([x, shortcut])
    x = L.Conv2D(classes, 3, padding="same")(x)
    out = L.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inp, out, name="mini_xception")


def write(out: Path, epochs: int = 30, seed: int = 0) -> dict[str, Path]:
    """Train it and write the model, calibration data and eval data (labelled and not)."""
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(seed)
    x, y, x_test, y_test = data(seed)
    model = mini_xception()
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    acc = float((model.predict(x_test, verbose=0).argmax(1) == y_test).mean())
    paths = {"model": out / "mini_xception.keras", "calib": out / "calib.npz", "eval": out / "eval.npz",
             "agreement": out / "eval_unlabelled.npz"}
    model.save(paths["model"])
    np.savez(paths["calib"], x=x)
    np.savez(paths["eval"], x=x_test, y=y_test)
    np.savez(paths["agreement"], x=x_test)
    return {**paths, "float_accuracy": acc}

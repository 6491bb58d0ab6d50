"""A --builder family for `edgec search` on the digits (8x8): the bundled example CNN's layout
(conv, conv, pool, conv, global pooling, dense) with its width, depth, kernel, activation, dense
head and dropout as hyperparameters. The example CNN is width 16, depth 3, kernel 3, relu, dense 64.

    edgec search --builder bench/search_models.py:digits_family --train train.npz --eval eval.npz ...
"""

from __future__ import annotations


def digits_family(hp):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    layers = keras.layers
    width = hp.int("width", 4, 32, log=True)
    depth = hp.int("depth", 1, 3)
    kernel = hp.choice("kernel", [2, 3])
    activation = hp.choice("activation", ["relu", "swish"])
    dense = hp.choice("dense", [0, 32, 64])
    dropout = hp.float("dropout", 0.0, 0.3, step=0.1)
    inp = keras.Input((8, 8, 1), name="image")
    x = inp
    for i in range(depth):
        x = layers.Conv2D(width * 2 ** i, kernel, padding="same", activation=activation)(x)
        if i == 1:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    if dense:
        x = layers.Dense(dense, activation=activation)(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name="digits_family")

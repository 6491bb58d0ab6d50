"""A --builder function for the tests: a small digits classifier whose width, depth and activation
are hyperparameters (dense layers: it learns within one epoch, which keeps the tests short)."""

from __future__ import annotations


def small_net(hp):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    width = hp.int("width", 4, 16, log=True)
    depth = hp.int("depth", 1, 2)
    activation = hp.choice("activation", ["relu", "tanh"])
    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten()(inp)
    for _ in range(depth):
        x = keras.layers.Dense(width * 4, activation=activation)(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x))

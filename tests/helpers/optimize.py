"""Compression test helpers: short training settings, a model with layers QAT cannot annotate,
readings of a build's artifact."""

from __future__ import annotations

FAST = {"epochs": 3, "lr": 2e-3}  # few epochs: structure, not accuracy


def unfriendly_model(keras, tf):
    """A digits CNN with a standalone BatchNormalization, Rescaling, UpSampling2D and a Lambda."""
    layers = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inp)
    x = layers.BatchNormalization(name="input_norm")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_a")(x)
    x = layers.UpSampling2D(2, name="upsample")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv_b")(x)
    x = layers.Lambda(lambda t: t * 0.5, name="halve")(x)  # no closure: .h5 saving deep-copies it
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_c")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name="digits_unfriendly")


def artifact_report(result) -> dict:
    """edgec.inspection's reading of the build's primary artifact."""
    from edgec.inspection import inspect_tflite

    return inspect_tflite(result.out_dir / result.manifest["artifacts"][0]["file"])


def kernel_rows(report: dict, ops=("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")) -> list[dict]:
    return [r for r in report["ops"] if r["op"] in ops and r["weight_shape"]]

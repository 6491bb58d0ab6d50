"""The conformance zoo's models: Keras Applications families and a transformer encoder block at
the smallest input size each allows, random weights, BatchNorm statistics set from data.

Random weights make a meaningless classifier but a meaningful int8 test once every BatchNorm's
moving mean and variance are those of the activations it sees (else activations grow or vanish
layer after layer and a per-tensor int8 range holds noise). :func:`set_batchnorm_stats` runs one
batch in training mode with momentum 0, so each BatchNorm's moving statistics become that batch's.

A model is made by a factory in this module; :func:`save` writes it where ``edgec build`` reads
it. ``python -m tests.zoo.models NAME OUT_DIR [--keras3]`` does the same in a child process: with
``--keras3`` it runs without TF_USE_LEGACY_KERAS, so ``keras`` is Keras 3 and the file is a
Keras 3 ``.keras`` file (the project pins tf-keras for TF-MOT; both live in one environment).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

CLASSES = 10
REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Arch:
    """One zoo row: how to make the model and what its input looks like."""

    name: str
    size: int  # input height = width (or sequence length for the transformer)
    make: Callable  # (keras, shape) -> model
    pixels: bool = True  # built-in preprocessing takes 0..255 pixels; else inputs in [-1, 1]
    quirk: str = ""  # what the row stresses
    saved_model: bool = False  # tf-keras: written as a SavedModel signature (tf-keras cannot reload it)
    keras3: bool = True  # Keras 3 has it and saves it as a .keras file (not a lambda activation)
    channels: int = 3


def _app(attr: str, **kwargs):
    def make(keras, shape):
        return getattr(keras.applications, attr)(input_shape=shape, weights=None, classes=CLASSES, **kwargs)

    return make


def _transformer(approximate: bool):
    def make(keras, shape):
        layers = keras.layers
        inp = keras.Input(shape, name="tokens")
        x = layers.Dense(32, name="embed")(inp)
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.MultiHeadAttention(num_heads=4, key_dim=8, name="attention")(h, h)
        x = layers.Add()([x, h])
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.Dense(64)(h)
        if approximate:  # tanh GELU: written out, so the model saves and loads as a plain file
            h = layers.Activation(_gelu_tanh_name(keras))(h)
        else:
            h = layers.Activation("gelu")(h)  # exact GELU (erf)
        h = layers.Dense(32)(h)
        x = layers.Add()([x, h])
        x = layers.GlobalAveragePooling1D()(x)
        return keras.Model(inp, layers.Dense(CLASSES, activation="softmax")(x),
                           name="transformer_" + ("tanh" if approximate else "erf"))

    return make


def _gelu_tanh_name(keras):
    """The tanh GELU as a callable activation: the SavedModel path (``saved_model=True``) keeps it
    as a traced function (neither Keras saves a lambda in a .keras file)."""
    import tensorflow as tf

    return lambda t: tf.nn.gelu(t, approximate=True)


ARCHS: dict[str, Arch] = {a.name: a for a in [
    Arch("MobileNet", 32, _app("MobileNet"), pixels=False, quirk="depthwise"),
    Arch("MobileNetV2", 32, _app("MobileNetV2"), pixels=False, quirk="depthwise, inverted residual"),
    Arch("MobileNetV3Small", 32, _app("MobileNetV3Small"), quirk="hard-swish, squeeze-excite"),
    Arch("MobileNetV3Large", 32, _app("MobileNetV3Large"), quirk="hard-swish, squeeze-excite"),
    Arch("EfficientNetB0", 32, _app("EfficientNetB0"), quirk="swish, squeeze-excite"),
    Arch("EfficientNetV2B0", 32, _app("EfficientNetV2B0"), quirk="fused MBConv"),
    Arch("ResNet50", 32, _app("ResNet50"), pixels=False, quirk="residual"),
    Arch("DenseNet121", 32, _app("DenseNet121"), pixels=False, quirk="concat-heavy"),
    Arch("InceptionV3", 75, _app("InceptionV3"), pixels=False, quirk="concat, asymmetric kernels"),
    Arch("NASNetMobile", 32, _app("NASNetMobile"), pixels=False, quirk="separable, cropping"),
    # Keras 3's applications have no RegNet
    Arch("RegNetX002", 32, _app("RegNetX002"), quirk="grouped conv", keras3=False),
    Arch("RegNetY002", 32, _app("RegNetY002"), quirk="grouped conv, squeeze-excite", keras3=False),
    Arch("ConvNeXtTiny", 32, _app("ConvNeXtTiny"), quirk="LayerNorm, LayerScale, GELU",
         saved_model=True),
    Arch("Xception", 71, _app("Xception"), pixels=False, quirk="separable"),
    Arch("TransformerGELU", 16, _transformer(False), pixels=False, channels=24,
         quirk="attention, exact GELU (Erf)"),
    Arch("TransformerGELUTanh", 16, _transformer(True), pixels=False, channels=24,
         quirk="attention, tanh GELU", saved_model=True, keras3=False),
]}


def input_shape(arch: Arch) -> tuple[int, ...]:
    if arch.name.startswith("Transformer"):
        return (arch.size, arch.channels)
    return (arch.size, arch.size, arch.channels)


def sample_inputs(arch: Arch, n: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (low-frequency noise, as photos are) in the model's input range."""
    rng = np.random.default_rng(seed)
    shape = input_shape(arch)
    if len(shape) == 2:
        return rng.normal(0, 1, (n, *shape)).astype(np.float32)
    coarse = rng.uniform(0, 1, (n, max(2, shape[0] // 8), max(2, shape[1] // 8), shape[2]))
    reps = (-(-shape[0] // coarse.shape[1]), -(-shape[1] // coarse.shape[2]))
    img = np.repeat(np.repeat(coarse, reps[0], 1), reps[1], 2)[:, :shape[0], :shape[1]]
    img = 0.7 * img + 0.3 * rng.uniform(0, 1, img.shape)
    return (img * 255.0 if arch.pixels else img * 2.0 - 1.0).astype(np.float32)


def set_batchnorm_stats(keras, model, x: np.ndarray) -> int:
    """Moving mean/variance of every BatchNormalization = those of its input on ``x``.

    One call in training mode with momentum 0 (and dropout off): each BatchNorm normalizes with
    its batch statistics and stores them, so the layers after it see what inference will give.
    Returns the number of BatchNorm layers set.
    """
    bns = [la for la in _all_layers(model) if isinstance(la, keras.layers.BatchNormalization)]
    drops = [la for la in _all_layers(model) if isinstance(la, keras.layers.Dropout)]
    saved = [(bn, bn.momentum) for bn in bns] + [(d, d.rate) for d in drops]
    for bn in bns:
        bn.momentum = 0.0
    for d in drops:
        d.rate = 0.0
    model(x, training=True)
    for layer, value in saved:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = value
        else:
            layer.rate = value
    return len(bns)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def make(name: str, keras=None):
    """The zoo model ``name`` with its BatchNorm statistics set from :func:`sample_inputs`."""
    arch = ARCHS[name]
    if keras is None:  # tf-keras through edgec; a Keras 3 caller passes its keras (no edgec import)
        from edgec.tfcompat import set_seed, tf_and_keras

        _, keras = tf_and_keras()
        set_seed(0)
    keras.utils.set_random_seed(0)
    model = arch.make(keras, input_shape(arch))
    set_batchnorm_stats(keras, model, sample_inputs(arch, 64, seed=1))
    return model


def save(name: str, out: Path, keras=None) -> Path:
    """Write zoo model ``name`` under ``out`` as a user would hand it to ``edgec build``, with
    ``calib.npz`` (x) beside it. Returns the model path."""
    import tensorflow as tf

    arch = ARCHS[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = make(name, keras)
    np.savez(out / "calib.npz", x=sample_inputs(arch, 64, seed=2))
    np.savez(out / "eval.npz", x=sample_inputs(arch, 32, seed=3))  # no labels: agreement, SQNR
    if keras is not None and not getattr(keras, "__version__", "2").startswith("2"):
        path = out / f"{name}.keras"  # Keras 3 file
        model.save(path)
        return path
    if arch.saved_model:  # tf-keras cannot reload these (LayerScale, a lambda): a serving signature
        path = out / name
        spec = tf.TensorSpec([None, *input_shape(arch)], tf.float32, name="input")

        class Serve(tf.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            @tf.function(input_signature=[spec])
            def serve(self, input):  # noqa: A002 - the signature's input name
                return {"output": self.m(input, training=False)}

        module = Serve(model)
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
        return path
    path = out / f"{name}.keras"
    model.save(path)
    return path


def save_in_child(name: str, out: Path, keras3: bool = False, timeout: int = 600) -> Path:
    """:func:`save` in a fresh Python process; ``keras3`` runs it without TF_USE_LEGACY_KERAS."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-m", "tests.zoo.models", name, str(out), *(["--keras3"] if keras3 else [])]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"making {name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return Path(json.loads(done.stdout.strip().splitlines()[-1])["path"])


def main(argv: list[str]) -> None:
    keras3 = "--keras3" in argv
    name, out = [a for a in argv if a != "--keras3"]
    if keras3:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        import keras
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        keras = None
    path = save(name, Path(out), keras)
    print(json.dumps({"path": str(path)}))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Write Keras 3 models for the tests (run as a child process without TF_USE_LEGACY_KERAS, so
``import keras`` and ``tf.keras`` are Keras 3 as in a fresh TensorFlow project).

Usage: python make_models.py OUT_DIR [apps]
"""

import os
import sys
from pathlib import Path

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from custom_layers import Scale, Twice  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)
layers = keras.layers
rng = np.random.default_rng(0)
x = rng.random((64, 16, 16, 3), dtype=np.float32)
y = rng.integers(0, 4, 64)


def settle(model):
    """A few training steps, so BatchNormalization statistics and weights are not their defaults."""
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model


inp = keras.Input((16, 16, 3), name="image")
h = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
h = layers.BatchNormalization()(h)
h = layers.ReLU()(h)
r = layers.Conv2D(8, 3, padding="same", activation="relu")(h)
h = layers.Add()([h, r])
h = layers.GlobalAveragePooling2D()(h)
logits = layers.Dense(4, name="logits")(h)
functional = settle(keras.Model(inp, logits, name="k3_functional"))
functional.save(out / "functional.keras")
functional.save(out / "functional.h5")

sequential = settle(keras.Sequential([keras.Input((16, 16, 3)), layers.Conv2D(4, 3, activation="relu"),
                                      layers.MaxPooling2D(), layers.Flatten(), layers.Dense(4)], name="k3_sequential"))
sequential.save(out / "sequential.keras")

inp = keras.Input((16, 16, 3), name="image")
h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
h = Scale(name="scale")(h)
h = layers.GlobalAveragePooling2D()(h)
custom = settle(keras.Model(inp, layers.Dense(4, name="logits")(h), name="k3_custom"))
custom.save(out / "custom.keras")

# nested models (a Sequential and a functional one) and dict outputs
block = keras.Sequential([keras.Input((16, 16, 8)), layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(),
                          layers.ReLU()], name="block")
stem_in = keras.Input((16, 16, 3))
stem = keras.Model(stem_in, layers.Conv2D(8, 1)(stem_in), name="stem")
inp = keras.Input((16, 16, 3), name="image")
h = layers.GlobalAveragePooling2D()(block(stem(inp)))
heads = {"cls": layers.Dense(4, name="cls")(h), "box": layers.Dense(2, activation="sigmoid", name="box")(h)}
keras.Model(inp, heads, name="k3_nested").save(out / "nested.keras")

inp = keras.Input((16, 16, 3), name="image")
h = Twice(name="twice")(layers.Conv2D(4, 3)(inp))
only = keras.Model(inp, layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D()(h)), name="k3_only")
only.save(out / "keras3_only.keras")
np.savez(out / "data.npz", x=x, y=y)


@keras.saving.register_keras_serializable(package="edgec_test")
class Unlisted(keras.layers.Layer):
    """Registered here only: no module a build can import has it."""

    def call(self, x):
        return x + 1.0


inp = keras.Input((16, 16, 3), name="image")
h = Unlisted(name="unlisted")(layers.Conv2D(4, 3)(inp))
keras.Model(inp, layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D()(h))).save(out / "unlisted.keras")



def set_batchnorm_statistics(model, x):
    """Moving statistics from the data, layer by layer, as a trained model has them: with the
    defaults (mean 0, variance 1) random deep nets give outputs near 0 and any difference looks small."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            h = np.asarray(keras.Model(model.inputs, layer.input)(x))
            axes = tuple(range(h.ndim - 1))
            layer.moving_mean.assign(h.mean(axis=axes))
            layer.moving_variance.assign(h.var(axis=axes) + 1e-3)


if "apps" in sys.argv[2:]:
    apps = keras.applications
    x32 = rng.random((8, 32, 32, 3), dtype=np.float32) * 255.0
    for name, make in (("MobileNetV2", apps.MobileNetV2), ("MobileNetV3Small", apps.MobileNetV3Small),
                       ("EfficientNetB0", apps.EfficientNetB0), ("ResNet50", apps.ResNet50)):
        model = make(input_shape=(32, 32, 3), weights=None, classes=4, classifier_activation=None)
        set_batchnorm_statistics(model, x32)
        model.save(out / f"{name}.keras")
    np.savez(out / "data32.npz", x=x32)

"""Write a small Keras 3 token model with exact GELU, LayerNormalization (centred and not) and
GroupNormalization, and Keras 3's own outputs for it (run as a child process without
TF_USE_LEGACY_KERAS).

Usage: python make_forms.py OUT_DIR
"""

import os
import sys
from pathlib import Path

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)
layers = keras.layers
x = np.random.default_rng(0).random((32, 6, 8), dtype=np.float32)

inp = keras.Input((6, 8), name="tokens")
h = layers.Dense(16, activation=keras.activations.gelu, name="up")(inp)  # approximate=False by default
h = layers.LayerNormalization(epsilon=1e-6, name="norm")(h)
h = layers.Activation("gelu")(layers.Dense(16, name="mix")(h))  # "gelu" is exact GELU in Keras 3
h = layers.LayerNormalization(center=False, name="norm_uncentred")(h)
h = layers.GroupNormalization(groups=4, name="group_norm")(h)
h = layers.GlobalAveragePooling1D()(h)
model = keras.Model(inp, layers.Dense(4, name="logits")(h), name="k3_gelu_norm")
# the normalizations' offset and scale away from their initial 0 and 1
for layer in model.layers:
    if isinstance(layer, (layers.LayerNormalization, layers.GroupNormalization)):
        layer.set_weights([np.random.default_rng(1).normal(1, 0.3, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
model.save(out / "gelu_norm.keras")
np.savez(out / "gelu_norm.npz", x=x, keras3=np.asarray(model(x, training=False)))

"""Write a small Keras 3 model on another backend (``KERAS_BACKEND`` as given), as ``.keras`` and
``.h5``, with that backend's own outputs for it (run as a child process).

Usage: python make_backend.py BACKEND OUT_DIR
"""

import os
import sys
from pathlib import Path

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ["KERAS_BACKEND"] = sys.argv[1]
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)
layers = keras.layers
x = np.random.default_rng(0).random((32, 12, 12, 3), dtype=np.float32)

inp = keras.Input((12, 12, 3), name="image")
h = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
h = layers.BatchNormalization()(h)
h = layers.ReLU()(h)
r = layers.DepthwiseConv2D(3, padding="same")(h)
h = layers.LayerNormalization()(layers.Add()([h, r]))
h = layers.GlobalAveragePooling2D()(h)
model = keras.Model(inp, layers.Dense(4, activation="gelu", name="logits")(h), name=f"k3_{sys.argv[1]}")
model.compile("adam", "mse")
model.fit(x, np.random.default_rng(1).normal(size=(32, 4)), epochs=1, batch_size=8, verbose=0)  # moves BatchNorm
model.save(out / "model.keras")
model.save(out / "model.h5")
np.savez(out / "data.npz", x=x, reference=np.asarray(model(x, training=False)))

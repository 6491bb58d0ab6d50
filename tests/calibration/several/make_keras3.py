"""Write a two-input Keras 3 model (run as a child process without TF_USE_LEGACY_KERAS, so
``import keras`` is Keras 3 as in a fresh TensorFlow project).

Usage: python make_keras3.py DATA.npz OUT.keras
"""

import os
import sys

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

data, out = np.load(sys.argv[1]), sys.argv[2]
keras.utils.set_random_seed(0)
layers = keras.layers
image = keras.Input((8, 8, 1), name="image")
side = keras.Input((4,), name="side")
h = layers.Conv2D(8, 3, padding="same", use_bias=False)(image)
h = layers.BatchNormalization()(h)
h = layers.ReLU()(h)
h = layers.Flatten()(h)
s = layers.Dense(8, activation="relu")(side)
h = layers.Concatenate()([h, s])
probs = layers.Dense(10, activation="softmax", name="probs")(h)
model = keras.Model([image, side], probs, name="k3_two_inputs")
model.compile("adam", "sparse_categorical_crossentropy")
model.fit([data["image"], data["side"]], data["y"], epochs=15, batch_size=32, verbose=0)
model.save(out)
probs_eval = model.predict([data["image"], data["side"]], verbose=0)
print(f"train accuracy {(probs_eval.argmax(1) == data['y']).mean():.3f}")

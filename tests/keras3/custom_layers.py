"""Custom layers for the Keras 3 and custom-objects tests, registered the way users do it.

``Scale`` exists in Keras 3 and, under the same registered name, in tf-keras (the bridge uses the
tf-keras one); ``Twice`` exists in Keras 3 only; ``Shift`` in tf-keras only.
"""

import keras
import tf_keras


@keras.saving.register_keras_serializable(package="edgec_test")
class Scale(keras.layers.Layer):
    """Multiplies each channel by a learned factor."""

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


@tf_keras.utils.register_keras_serializable(package="edgec_test", name="Scale")
class TfScale(tf_keras.layers.Layer):
    """``Scale`` for tf-keras."""

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


@keras.saving.register_keras_serializable(package="edgec_test")
class Twice(keras.layers.Layer):
    """Doubles its input (no tf-keras version)."""

    def call(self, x):
        return x * 2.0


@tf_keras.utils.register_keras_serializable(package="edgec_test")
class Shift(tf_keras.layers.Layer):
    """Adds a learned per-channel offset (tf-keras only)."""

    def build(self, input_shape):
        self.beta = self.add_weight(name="beta", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + self.beta

"""The one place TensorFlow and tf-keras are imported from.

TF-MOT and tf2onnx need Keras 2 (the tf-keras package): ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is first imported, which importing :mod:`edgec` does.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

from edgec.errors import EdgecError

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def tf_and_keras():
    """Import TensorFlow and tf-keras (Keras 2), configured quietly.

    Returns:
        ``(tensorflow, tf_keras)`` modules.

    Raises:
        EdgecError: TensorFlow was already imported with Keras 3 as ``tf.keras``.
    """
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgec.util import capture_native_stderr

    # TensorFlow's native start-up chatter (CUDA probing on CPU hosts) goes to fd 2 directly.
    with capture_native_stderr() as native:
        import tensorflow as tf
        import tf_keras

        tf.config.list_physical_devices()
    if native and native[0].strip():
        log.debug("TensorFlow start-up output:\n%s", native[0])

    if not tf.keras.__name__.startswith("tf_keras") and "tf_keras" not in str(tf.keras):
        raise EdgecError(
            "TensorFlow was imported before edgec with Keras 3 as tf.keras; import edgec first "
            "or set TF_USE_LEGACY_KERAS=1 in the environment"
        )
    tf.get_logger().setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; be tolerant anyway
        pass
    return tf, tf_keras


def set_seed(seed: int) -> dict[str, object]:
    """Seed Python, NumPy and TensorFlow and turn TensorFlow's op determinism on, so sampling and
    training give the same numbers on every run on one machine (seeds alone do not: parallel
    reductions and some kernels change their order from run to run).

    Returns:
        What the manifest records: the seed and that op determinism was on.
    """
    import random

    import numpy as np

    tf, keras = tf_and_keras()
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return {"seed": int(seed), "op_determinism": determinism_enabled()}


def fresh_names() -> None:
    """Restart Keras' automatic layer names (``quantize_layer``, ``quantize_layer_1``, ...), which
    end up in the artifact's tensor names: a stage that creates layers starts from the same names
    in a long-running process (``edgec ci``, ``edgec search``, the Python API) as in a fresh one,
    so it writes the same bytes. Call it only before a model is built, never in the middle."""
    _, keras = tf_and_keras()
    keras.backend.reset_uids()


def determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on in this process."""
    tf, _ = tf_and_keras()
    try:
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):  # a TensorFlow without the query: trust the call above
        return True


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact (for the manifest)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("edgec", "tensorflow", "tf-keras", "tensorflow-model-optimization",
                 "ai-edge-litert", "numpy", "tf2onnx", "onnx", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions

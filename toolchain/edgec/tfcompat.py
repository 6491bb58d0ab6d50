"""The one place TensorFlow and tf-keras are imported from.

TF-MOT and tf2onnx need Keras 2 (the tf-keras package): ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is first imported, which importing :mod:`edgec` does.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import lru_cache

from edgec.errors import EdgecError

log = logging.getLogger(__name__)

#: TensorFlow reads it once, when it loads: "0" runs its own (Eigen) kernels instead of oneDNN's.
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
_ONEDNN_MARK = "EDGEC_ONEDNN_OFF"  # tells child processes that edgec, not the user, set it
_onednn = {"set_by": None}  # who decided oneDNN's state in this process: "edgec", "environment" or None
ONEDNN_REASON = ("oneDNN off in edgec's processes: TensorFlow 2.21's oneDNN kernels corrupt the heap on some shapes "
                 "(batch matmul with broadcast batch dimensions aborts with 'double free or corruption' / "
                 "'free(): invalid pointer'); TensorFlow's own kernels do not")


def plan_onednn(training: bool) -> None:
    """Decide oneDNN's state before TensorFlow loads: off when this process will fine-tune
    (compression steps), unless ``TF_ENABLE_ONEDNN_OPTS`` is set (the user's choice is kept).
    Importing :mod:`edgec` before TensorFlow already turns it off for the whole process (so the
    Python API and the CLI run the same kernels); this covers a variable removed since.

    TensorFlow reads the variable once, at import, so a process that loaded TensorFlow before
    edgec keeps its state and a fine-tuning build warns; :func:`onednn_state` records which.
    """
    if ONEDNN_ENV in os.environ:  # the user's, or ours inherited by a build's child process
        _onednn["set_by"] = _onednn["set_by"] or ("edgec" if os.environ.get(_ONEDNN_MARK) else "environment")
        return
    if training and "tensorflow" not in sys.modules:
        os.environ[ONEDNN_ENV] = "0"
        os.environ[_ONEDNN_MARK] = "1"
        _onednn["set_by"] = "edgec"
    elif training and _onednn["set_by"] is None:
        log.warning("TensorFlow was loaded before this build, with oneDNN as it was then; set %s=0 before "
                    "importing TensorFlow to fine-tune without oneDNN's kernels (see the manifest's "
                    "reproducibility.onednn)", ONEDNN_ENV)


def onednn_state() -> dict[str, object]:
    """Whether TensorFlow runs oneDNN kernels in this process, and why (for the manifest)."""
    tf_and_keras()
    try:
        from tensorflow.python.util import _pywrap_util_port

        enabled = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a TensorFlow without the query: read what it read
        enabled = os.environ.get(ONEDNN_ENV, "1") not in ("0", "false", "False")
    if _onednn["set_by"] == "edgec":
        why = ONEDNN_REASON
    elif _onednn["set_by"] == "environment" or ONEDNN_ENV in os.environ:
        why = f"{ONEDNN_ENV}={os.environ.get(ONEDNN_ENV)} in the environment"
    else:
        why = "TensorFlow's default"
    return {"onednn": enabled, "onednn_reason": why}


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
    return {"seed": int(seed), "op_determinism": determinism_enabled(), **onednn_state()}


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


def import_keras3():
    """Keras 3 on the TensorFlow backend, imported after edgec's TensorFlow set-up.

    Raises:
        EdgecError: Keras 3 is not installed, or was imported earlier on another backend.
    """
    tf_and_keras()  # TensorFlow first, with tf-keras as tf.keras
    # Keras 3 reads its backend once, at import: the TensorFlow backend is the one that exports
    # to a SavedModel and shares tensors with tf-keras; a file saved on JAX or PyTorch loads on it too.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        import keras
    except ImportError as exc:
        raise EdgecError("this model was saved by Keras 3, which is not installed here; pip install 'keras>=3'") from exc
    if not keras.__version__.startswith("3"):
        raise EdgecError(f"this model was saved by Keras 3, but 'import keras' gives Keras {keras.__version__}; "
                         "pip install 'keras>=3'")
    if keras.backend.backend() != "tensorflow":
        raise EdgecError(f"Keras 3 was imported on the '{keras.backend.backend()}' backend before edgec loaded it; "
                         "edgec needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    return keras

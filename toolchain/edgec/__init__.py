"""edgec: Keras model in, small, fast, verified edge-device artifacts out.

Importing this package is cheap: TensorFlow loads only when a function that needs it runs.
The Python API mirrors the CLI::

    import edgec
    result = edgec.build("model.keras", target="rpi5", precision="int8", calib="calib.npz")
"""

from __future__ import annotations

import os
import sys

# TF-MOT and tf2onnx need Keras 2 (tf-keras); this must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow 2.21's oneDNN kernels corrupt the heap on some shapes met while fine-tuning (see
# edgec.tfcompat.ONEDNN_REASON). TensorFlow reads this once, when it loads, so edgec decides it here
# for the whole process: every build of it, through the Python API or the CLI, runs the same kernels
# and writes the same bytes. A value already in the environment is kept.
if "TF_ENABLE_ONEDNN_OPTS" not in os.environ and "tensorflow" not in sys.modules:
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    os.environ["EDGEC_ONEDNN_OFF"] = "1"  # tells edgec's child processes that edgec, not the user, set it
# TensorFlow's native log: fatal lines only (its other lines are start-up chatter and version-skew
# notices; real failures raise). `edgec --debug` shows everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__all__ = ["__version__", "build", "EdgecError"]

from edgec.errors import EdgecError  # noqa: E402  (light: no third-party imports)
from edgec.version import __version__  # noqa: E402


def build(model, target, **options):
    """Build device artifacts for one profile, or for a list of them (one result each, with shared
    work); see :func:`edgec.pipeline.build`."""
    from edgec.pipeline import build as _build

    return _build(model, target=target, **options)

"""Target kinds: one module (or package) per kind, looked up through a plain dict (no import side effects).

A target turns the (optimized) Keras model into the artifact files a device runs, and names
the runtime the host verifies them with and the device agent runs them with. The kinds are
:data:`edgec.agent.vocab.TARGET_KINDS`; a device profile names one of them.
"""

from __future__ import annotations

import importlib

from edgec.errors import EdgecError, choices

#: target kind -> "module:Class", one entry per kind of TARGET_KINDS
REGISTRY: dict[str, str] = {
    "tflite": "edgec.targets.tflite:TFLiteTarget",
    "edgetpu": "edgec.targets.edgetpu.target:EdgeTPUTarget",
    "tensorrt": "edgec.targets.tensorrt.target:TensorRTTarget",
}


def get(kind: str):
    """Instantiate the target of a kind.

    Raises:
        EdgecError: ``kind`` is not a target kind.
    """
    if kind not in REGISTRY:
        raise EdgecError(f"unknown target kind '{kind}'; valid: {choices(REGISTRY)}")
    module_name, cls_name = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module_name), cls_name)()

"""Target kinds: one package per kind, looked up through a plain dict (no import side effects).

A target turns the (optimized) Keras model into the artifact files a device runs, and names the
runtime the host verifies them with and the device agent runs them with. Everything else edgec
knows of a kind hangs off its :class:`~edgec.targets.base.Target`: the profile table it reads,
its accuracy backend, its search-space defaults, what of a build ships to a device, and the
figures its budgets read. Adding a kind is its own package and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib

from edgec.errors import EdgecError, choices

#: target kind -> "module:Class", one entry per kind
REGISTRY: dict[str, str] = {
    "tflite": "edgec.targets.tflite.target:TFLiteTarget",
    "edgetpu": "edgec.targets.edgetpu.target:EdgeTPUTarget",
    "tensorrt": "edgec.targets.tensorrt.target:TensorRTTarget",
}


def target_class(kind: str):
    """The :class:`~edgec.targets.base.Target` subclass of a kind.

    Raises:
        EdgecError: ``kind`` is not a target kind.
    """
    if kind not in REGISTRY:
        raise EdgecError(f"unknown target kind '{kind}'; valid: {choices(REGISTRY)}")
    module_name, cls_name = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def get(kind: str):
    """Instantiate the target of a kind.

    Raises:
        EdgecError: ``kind`` is not a target kind.
    """
    return target_class(kind)()

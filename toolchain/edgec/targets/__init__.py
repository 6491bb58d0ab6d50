"""Target kinds: one module per kind, looked up through a plain dict (no import side effects).

A target turns the (optimized) Keras model into the artifact files a device runs, and names
the runtime the host verifies them with and the device agent runs them with.
"""

from __future__ import annotations

import importlib

from edgec.errors import EdgecError, choices

#: target kind -> "module:Class"
REGISTRY: dict[str, str] = {
    "tflite": "edgec.targets.tflite:TFLiteTarget",
    "edgetpu": "edgec.targets.edgetpu.target:EdgeTPUTarget",
    "tensorrt": "edgec.targets.tensorrt.target:TensorRTTarget",
}


def available() -> list[str]:
    return sorted(REGISTRY)


def get(kind: str, profile_id: str | None = None):
    """Instantiate the target for a kind.

    Raises:
        EdgecError: the kind has no implementation in this version.
    """
    if kind not in REGISTRY:
        who = f" (profile '{profile_id}')" if profile_id else ""
        raise EdgecError(
            f"target kind '{kind}'{who} is not available yet in this version of edgec; "
            f"available target kinds: {choices(REGISTRY)}"
        )
    module_name, cls_name = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module_name), cls_name)()

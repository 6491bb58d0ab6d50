"""Keras 3 files (``.keras``, and ``.h5`` written by Keras 3, from any backend) in edgec.

TF-MOT and tf2onnx need tf-keras (Keras 2), which cannot read Keras 3 files. Keras 3 itself is
installed beside it, and on its TensorFlow backend it lives in the same process as tf-keras
(``tf.keras`` is tf-keras, ``import keras`` is Keras 3). A Keras 3 model reaches the targets in one
of two ways, recorded in the manifest under ``source.keras``:

- ``export`` (no compression step): Keras 3's own export writes a SavedModel with a serving
  signature whose outputs are named as the model names them; edgec loads it as a
  :class:`edgec.model_io.SignatureModel`, with no tf-keras round trip.
- ``bridge`` (compression steps, which train tf-keras layers): :mod:`edgec.keras3.bridge` rebuilds
  the graph in tf-keras layer by layer, copies the weights and checks on calibration samples that
  both compute the same function before any step runs.

Keras 3 is imported inside the functions that use it, on the TensorFlow backend.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError
from edgec.tfcompat import import_keras3

log = logging.getLogger(__name__)

CUSTOM_HINT = ("pass the module or .py file that registers it with --custom-objects "
               "(keras.saving.register_keras_serializable)")


def is_keras3_model(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 model object (not a tf-keras one)."""
    module = type(obj).__module__
    if not module.startswith("keras"):
        return False
    keras = import_keras3()
    return isinstance(obj, keras.Model)


def load_file(path: Path, fmt: str, version: str, saved_backend: str | None = None):
    """Load a Keras 3 file with Keras 3.

    Raises:
        EdgecError: unreadable file, unknown (unregistered) custom layer, Lambda code.
    """
    keras = import_keras3()
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # zipfile, h5py and Keras raise their own types
        text = str(exc)
        reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        missing = re.search(r"Could not locate (class|function) '([^']+)'", text)
        if missing:  # Keras wraps it in a paragraph about from_config; the name is what helps
            registered = re.search(r"'registered_name': '([^']+)'", text[missing.end():])
            also = f" (registered as '{registered.group(1)}')" if registered else ""
            raise EdgecError(f"cannot read Keras {version} model '{path}': it uses the custom {missing.group(1)} "
                             f"'{missing.group(2)}'{also}, which is not registered here; {CUSTOM_HINT}") from exc
        if "lambda" in reason.lower() and "safe_mode" in text:
            raise EdgecError(f"model '{path}' holds a Lambda layer with Python code, which Keras 3 loads only from "
                             "trusted files; replace the Lambda with a registered custom layer "
                             f"and {CUSTOM_HINT}") from exc
        if "Could not locate" in reason or "Unknown layer" in reason or "not found" in reason.lower():
            raise EdgecError(f"cannot read Keras {version} model '{path}': {reason[:300]}; if it is a custom layer, "
                             f"{CUSTOM_HINT}") from exc
        raise EdgecError(f"cannot read Keras {version} model '{path}': {reason[:300]}") from exc


def output_names(model) -> list[str]:
    """A Keras 3 model's output names in its flattened output order: the output layers' names, or
    the keys of dict outputs (``a/b`` when nested), as :func:`edgec.model_io.output_specs` names
    tf-keras outputs."""
    from edgec.signature import leaf_paths

    keras = import_keras3()
    structure = getattr(model, "_outputs_struct", None)
    flat = keras.tree.flatten(model.outputs)
    if isinstance(structure, dict):
        names = list(leaf_paths(structure))
    else:
        names = [t._keras_history.operation.name for t in flat]
    if len(names) != len(flat) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(flat))]
    return names


def input_names(model) -> list[str]:
    """A Keras 3 model's input names, in its input order."""
    keras = import_keras3()
    return [t._keras_history.operation.name for t in keras.tree.flatten(model.inputs)]


def export(model, name: str | None = None):
    """The model as a :class:`edgec.model_io.SignatureModel`, through Keras 3's own export: a
    serving signature taking the model's inputs by name and returning its outputs by name.

    Raises:
        EdgecError: the export failed (the message names Keras' reason), or the model has other than
            one input.
    """
    from edgec.keras3.forms import integer_forms
    from edgec.signature import SignatureModel
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    keras = import_keras3()
    names = output_names(model)
    inputs = keras.tree.flatten(model.inputs)
    in_names = input_names(model)
    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=n) for t, n in zip(inputs, in_names, strict=True)]

    def serve(*xs):
        with integer_forms(model):  # LayerNormalization without a float NEG in int8 TFLite
            outs = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return dict(zip(names, keras.tree.flatten(outs), strict=True))

    with tempfile.TemporaryDirectory(prefix="edgec-keras3-") as tmp:
        try:
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serving_default", serve, input_signature=specs)
            archive.write_out(tmp, verbose=False)
        except Exception as exc:  # Keras and TensorFlow raise their own types while tracing
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EdgecError(f"Keras 3's export of model '{name or model.name}' failed: {reason[:300]}") from exc
        # the variables are read into memory here; the directory is not needed afterwards
        signature = SignatureModel(Path(tmp), output_order=names, input_order=in_names)
    signature.name = model.name
    return signature


def describe(version: str | None, saved_backend: str | None, route: str, **extra) -> dict[str, Any]:
    """What the manifest records of a Keras 3 source (``source.keras``)."""
    keras = import_keras3()
    return {"version": version, "saved_backend": saved_backend, "backend": keras.backend.backend(),
            "keras": keras.__version__, "path": route, **extra}

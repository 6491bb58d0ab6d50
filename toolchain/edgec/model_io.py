"""Load a model from .keras, .h5 or a SavedModel directory, with errors a user can act on, and
describe its outputs in one order with one name each.

A SavedModel written by tf-keras loads as a Keras model. A SavedModel without Keras metadata (TF's
``tf.saved_model.save``, Keras 3's ``model.export()``) loads as a :class:`SignatureModel`: its
serving signature is built and verified like a Keras model, but the compression steps, which
train Keras layers, need a Keras model.

Outputs: a model's outputs are flattened the way Keras flattens them (``tf.nest``: lists in
order, dicts by sorted key), and each gets a name: the output layer's name for a single tensor or
a list, the key (``a/b`` for nested structures) for dicts. Every artifact keeps that order, and
every comparison pairs outputs by those names.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.signature import SignatureModel, leaf_paths  # noqa: F401  (part of this module's API)
from edgec.util import sha256_file

log = logging.getLogger(__name__)

LAMBDA_HINT = (
    "tf-keras refuses to load Python code from a .keras file unless it is trusted; if you trust "
    "this file, load it yourself with tf_keras.models.load_model(path, safe_mode=False) and pass the "
    "model to edgec.build(), or re-save it as .h5, or replace the Lambda with a registered custom layer"
)


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One output of a model.

    Attributes:
        name: what users call it: the output layer's name (single tensor, list or tuple outputs)
            or its key in a dict (``a/b`` when nested).
        key: what the converters call it: the Keras output layer name (tf2onnx) or the
            signature's output key.
        shape: without the batch dimension (``None`` for unknown sizes).
    """

    name: str
    key: str
    shape: tuple[int | None, ...]


@dataclasses.dataclass
class LoadedModel:
    """A model with where it came from."""

    model: Any  # tf_keras.Model or SignatureModel
    path: Path | None
    format: str  # "keras", "h5", "savedmodel", "signature" or "object"
    sha256: str | None
    keras: dict[str, Any] | None = None  # a Keras 3 source: versions, backend, path taken (export | bridge)
    keras3_model: Any = None  # the Keras 3 model itself, for the bridge into tf-keras

    def describe(self) -> dict[str, Any]:
        record = {"path": str(self.path) if self.path else None, "format": self.format,
                  "sha256": self.sha256, "name": self.model.name,
                  "params": int(self.model.count_params()),
                  "inputs": [i.describe() for i in input_specs(self.model)],
                  "outputs": [{"name": o.name, "shape": list(o.shape)} for o in output_specs(self.model)]}
        if self.keras is not None:
            record["keras"] = self.keras
        return record


def output_specs(model) -> list[OutputSpec]:
    """The outputs of a Keras or signature model, in Keras' flattened order (see the module doc)."""
    if isinstance(model, SignatureModel):
        return [OutputSpec(k, k, model.output_shapes[k]) for k in model.output_keys]
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    structure = getattr(model, "_nested_outputs", None)
    if structure is None:
        structure = model.outputs if len(model.outputs) != 1 else model.outputs[0]
    flat = model.outputs
    layer_names = list(model.output_names)
    if tf.is_tensor(structure) or (isinstance(structure, (list, tuple))
                                   and all(tf.is_tensor(t) for t in structure)):
        names = layer_names
    else:
        names = list(leaf_paths(structure))
    if len(names) != len(flat) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(flat))]
    return [OutputSpec(name, key, tuple(None if d is None else int(d) for d in t.shape[1:]))
            for name, key, t in zip(names, layer_names, flat, strict=True)]


def predict(model, x) -> list[np.ndarray]:
    """Inference-mode outputs of a Keras or signature model on ``x`` (an array, or a dict keyed by
    input name for several inputs), flattened in output order."""
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    outs = model(model_feed(model, x), training=False)
    return [np.asarray(o, dtype=np.float32) for o in tf.nest.flatten(outs)]


def named_function(model, batch: int | None = None, names: list[str] | None = None):
    """A concrete TF function of the model returning a dict {output name: tensor} (``names`` in
    output order, default the model's own), input named as the model's: what the TFLite converter
    turns into a signature with those output names."""
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    names = names or [o.name for o in output_specs(model)]
    specs = input_specs(model)
    tensor_specs = [tf.TensorSpec([batch, *s.shape], s.dtype, name=s.name) for s in specs]

    def call(*xs):
        feed = xs[0] if len(xs) == 1 else dict(zip([s.name for s in specs], xs, strict=True))
        return dict(zip(names, tf.nest.flatten(model(model_feed(model, feed), training=False)), strict=True))

    return tf.function(call).get_concrete_function(*tensor_specs)


def model_feed(model, x):
    """``x`` as the model takes it: an array for one input; for several, the dict keyed by input
    name (signature models), or the list in the model's input order (Keras models: the data was
    keyed and checked by input name on loading, so the order is the model's own, whatever the
    dict's)."""
    if not isinstance(x, dict) or isinstance(model, SignatureModel):
        return x
    return [x[s.name] for s in input_specs(model)]


def detect_format(path: Path) -> str:
    """Tell the model format from the path.

    Raises:
        EdgecError: the path does not exist or is not a known model format.
    """
    if not path.exists():
        raise EdgecError(f"model '{path}' does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise EdgecError(f"'{path}' is a directory without saved_model.pb; expected a SavedModel directory, a .keras or a .h5 file")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras"
    if suffix in (".h5", ".hdf5"):
        return "h5"
    raise EdgecError(f"model '{path}' has an unknown format '{suffix or path.name}'; expected a .keras or .h5 file or a SavedModel directory")


def _keras_file_version(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
        return str(meta.get("keras_version"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None


def _h5_keras_version(path: Path) -> str | None:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version")
    except (ImportError, OSError):
        return None
    return version.decode() if isinstance(version, bytes) else (str(version) if version is not None else None)


def _unregistered(path: Path, keras) -> list[str]:
    """The custom objects a .keras file names that no registered class of this process matches."""
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return []
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            registered, module = node.get("registered_name"), str(node.get("module") or "")
            if (isinstance(registered, str) and "class_name" in node and not module.startswith(("keras", "tf_keras"))
                    and keras.saving.get_registered_object(registered) is None):
                found.append(f"'{node['class_name']}' (registered as '{registered}')")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return list(dict.fromkeys(found))


def _h5_backend(path: Path) -> str | None:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            backend = f.attrs.get("backend")
    except (ImportError, OSError):
        return None
    return backend.decode() if isinstance(backend, bytes) else (str(backend) if backend is not None else None)


def _load_keras3(model, path: Path | None, fmt: str, version: str | None, saved_backend: str | None,
                 keras_layers: bool) -> LoadedModel:
    """A Keras 3 model, exported to a serving signature, or kept for the bridge into tf-keras
    (``keras_layers``: the compression steps need tf-keras layers; the pipeline bridges it once the
    calibration samples that check the bridge are loaded)."""
    from edgec import keras3

    digest = sha256_file(path) if path is not None else None
    if keras_layers:
        return LoadedModel(model, path, fmt, digest, keras3.describe(version, saved_backend, "bridge"), model)
    signature = keras3.export(model)
    return LoadedModel(signature, path, fmt, digest, keras3.describe(version, saved_backend, "export"), model)


def load_model(source: Any, keras_layers: bool = False, custom_objects=()) -> LoadedModel:
    """Load a tf-keras model, a Keras 3 model or a SavedModel.

    Args:
        source: a path (.keras, .h5, SavedModel dir), or an already built tf-keras or Keras 3 model.
        keras_layers: the caller needs Keras layers (the compression steps): a Keras 3 model is
            kept for :func:`edgec.keras3.bridge.to_tf_keras` instead of exported.
        custom_objects: modules or .py files that register custom layers, imported first
            (:func:`edgec.custom_objects.import_all`).

    Raises:
        EdgecError: unreadable or corrupt file, an unknown custom layer; not a Keras model.
    """
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    if custom_objects:
        from edgec.custom_objects import import_all

        import_all(custom_objects)
    if isinstance(source, keras.Model):
        return LoadedModel(source, None, "object", None)
    if not isinstance(source, (str, Path)):
        from edgec import keras3

        if keras3.is_keras3_model(source):
            import keras as keras_3

            return _load_keras3(source, None, "object", keras_3.__version__, None, keras_layers)
        raise EdgecError(
            f"expected a model path, a tf-keras Model or a Keras 3 Model, got "
            f"{type(source).__module__}.{type(source).__name__}"
        )
    path = Path(source)
    fmt = detect_format(path)
    version = None
    if fmt == "keras":
        version = _keras_file_version(path)
        if version is None:
            raise EdgecError(f"cannot read model '{path}': not a valid .keras archive (corrupt or truncated)")
    elif fmt == "h5":
        version = _h5_keras_version(path)
    if version and version.startswith("3"):
        from edgec import keras3

        backend = _h5_backend(path) if fmt == "h5" else None
        return _load_keras3(keras3.load_file(path, fmt, version, backend), path, fmt, version, backend, keras_layers)
    if fmt == "savedmodel" and not (path / "keras_metadata.pb").exists():
        return LoadedModel(SignatureModel(path), path, "signature", sha256_file(path))
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # h5py, zipfile, protobuf and Keras all raise their own types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "deserialization of a Lambda layer" in reason:
            raise EdgecError(f"model '{path}' holds a Lambda layer with Python code; {LAMBDA_HINT}") from exc
        unknown = _unregistered(path, keras) if fmt == "keras" else []
        if unknown:  # tf-keras fails on them with "'str' object is not callable"
            raise EdgecError(f"cannot read model '{path}': it uses custom {', '.join(unknown)}, not registered here; "
                             "pass the module or .py file that registers it with --custom-objects") from exc
        if "Unknown layer" in reason or "Could not locate" in reason:
            raise EdgecError(f"cannot read model '{path}': {reason[:300]}; pass the module or .py file that registers "
                             "the custom layer with --custom-objects") from exc
        raise EdgecError(f"cannot read model '{path}': {reason[:300]}") from exc
    if not isinstance(model, keras.Model):
        return LoadedModel(SignatureModel(path), path, "signature", sha256_file(path))
    if len({s.name for s in input_specs(model)}) != len(model.inputs):
        raise EdgecError(f"model '{path}' has {len(model.inputs)} inputs with repeated names "
                         f"({', '.join(s.name for s in input_specs(model))}); give each Input a distinct name")
    return LoadedModel(model, path, fmt, sha256_file(path))


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of a model: its name (the Input layer's, or the signature's key), its shape
    without the batch dimension (``None`` for unknown sizes) and its dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def input_specs(model) -> list[InputSpec]:
    """The model's inputs, in its input order (what data for several inputs is keyed by)."""
    if isinstance(model, SignatureModel):
        names = list(model.input_names)
    else:
        names = list(getattr(model, "input_names", None) or [])
        if len(names) != len(model.inputs):
            names = [f"input_{i}" for i in range(len(model.inputs))] if len(model.inputs) > 1 else ["input"]
    out = []
    for name, inp in zip(names, model.inputs, strict=True):
        dtype = inp.dtype.name if hasattr(inp.dtype, "name") else str(inp.dtype)
        out.append(InputSpec(str(name), tuple(None if d is None else int(d) for d in inp.shape[1:]), dtype))
    return out


def input_spec(model) -> tuple[tuple[int | None, ...], str]:
    """The first input's shape without the batch dimension, and its dtype name."""
    first = input_specs(model)[0]
    return first.shape, first.dtype


def data_shapes(model):
    """What :func:`edgec.calibration.load` checks data against: the input's shape for a model with
    one input, else ``{input name: shape}`` in the model's input order."""
    specs = input_specs(model)
    return specs[0].shape if len(specs) == 1 else {s.name: s.shape for s in specs}

"""Load a Keras model from .keras, .h5 or a SavedModel directory, with errors a user can act on."""

from __future__ import annotations

import dataclasses
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError
from edgec.util import sha256_file

log = logging.getLogger(__name__)

KERAS3_RESAVE_HINT = (
    "re-save it with tf-keras (Keras 2), which cannot read Keras 3 files, .h5 included: build the same "
    "architecture with tf-keras (TF_USE_LEGACY_KERAS=1, import tf_keras as keras), copy the weights into it "
    "(np.savez('w.npz', *keras3_model.get_weights()) in Keras 3, then "
    "model.set_weights(list(np.load('w.npz').values())) in tf-keras) and save it with model.save('model.keras')"
)
LAMBDA_HINT = (
    "tf-keras refuses to load Python code from a .keras file unless it is trusted; if you trust "
    "this file, load it yourself with tf_keras.models.load_model(path, safe_mode=False) and pass the "
    "model to edgec.build(), or re-save it as .h5, or replace the Lambda with a registered custom layer"
)


@dataclasses.dataclass
class LoadedModel:
    """A Keras model with where it came from."""

    model: Any  # tf_keras.Model
    path: Path | None
    format: str  # "keras", "h5", "savedmodel" or "object"
    sha256: str | None

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "format": self.format,
                "sha256": self.sha256, "name": self.model.name,
                "params": int(self.model.count_params())}


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


def load_model(source: Any) -> LoadedModel:
    """Load a Keras 2 (tf-keras) model.

    Args:
        source: a path (.keras, .h5, SavedModel dir) or an already built tf-keras model.

    Raises:
        EdgecError: unreadable, corrupt or Keras 3 file; not a Keras model.
    """
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    if isinstance(source, keras.Model):
        return LoadedModel(source, None, "object", None)
    if not isinstance(source, (str, Path)):
        raise EdgecError(
            f"expected a model path or a tf-keras Model, got {type(source).__module__}.{type(source).__name__}; "
            "Keras 3 models must be saved and re-loaded with tf-keras (see edgec docs)"
        )
    path = Path(source)
    fmt = detect_format(path)
    if fmt == "keras":
        version = _keras_file_version(path)
        if version is None:
            raise EdgecError(f"cannot read model '{path}': not a valid .keras archive (corrupt or truncated)")
        if version.startswith("3"):
            raise EdgecError(f"model '{path}' was saved by Keras {version}, which TF-MOT cannot use; {KERAS3_RESAVE_HINT}")
    elif fmt == "h5":
        version = _h5_keras_version(path)
        if version and version.startswith("3"):
            raise EdgecError(f"model '{path}' was saved by Keras {version}, which TF-MOT cannot use; {KERAS3_RESAVE_HINT}")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # h5py, zipfile, protobuf and Keras all raise their own types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "deserialization of a Lambda layer" in reason:
            raise EdgecError(f"model '{path}' holds a Lambda layer with Python code; {LAMBDA_HINT}") from exc
        if "Unknown layer" in reason or "Could not locate" in reason:
            raise EdgecError(f"cannot read model '{path}': {reason[:300]} (custom layers must be importable)") from exc
        raise EdgecError(f"cannot read model '{path}': {reason[:300]}") from exc
    if not isinstance(model, keras.Model):
        raise EdgecError(f"'{path}' holds a SavedModel without Keras metadata; save it with model.save() from tf-keras")
    if len(model.inputs) != 1:
        raise EdgecError(f"model '{path}' has {len(model.inputs)} inputs; edgec supports single-input models")
    return LoadedModel(model, path, fmt, sha256_file(path))


def input_spec(model) -> tuple[tuple[int | None, ...], str]:
    """The model's input shape without the batch dimension, and its dtype name."""
    inp = model.inputs[0]
    shape = tuple(None if d is None else int(d) for d in inp.shape[1:])
    return shape, inp.dtype.name if hasattr(inp.dtype, "name") else str(inp.dtype)

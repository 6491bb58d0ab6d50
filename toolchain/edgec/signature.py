"""A SavedModel's serving signature, shaped like the Keras model edgec uses
(:class:`SignatureModel`), and the ``a/b`` paths of a nested structure's leaves. Read by
:mod:`edgec.model_io`, which loads models, and by :mod:`edgec.keras3`, which exports Keras 3
models to such a signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.errors import EdgecError


class SignatureModel:
    """The serving signature of a SavedModel without Keras metadata, shaped like what edgec uses of
    a Keras model: ``name``, ``inputs``, ``count_params()`` and a call returning the outputs dict.

    Several inputs are taken by name (``input_names``, in ``input_order`` when the exporter gave
    one, else sorted); a call takes one array (one input) or a dict keyed by those names.

    Raises:
        EdgecError: no signature, or a signature without inputs.
    """

    layers: list = []  # no Keras layers: nothing to compress

    def __init__(self, path: Path, signature: str | None = None, output_order: list[str] | None = None,
                 input_order: list[str] | None = None):
        from edgec.tfcompat import tf_and_keras

        tf, _ = tf_and_keras()
        self.path = Path(path)
        self.name = self.path.name
        try:
            self.loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # protobuf, OSError, ValueError...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EdgecError(f"cannot read SavedModel '{path}': {reason[:300]}") from exc
        signatures = dict(getattr(self.loaded, "signatures", {}) or {})
        if not signatures:
            raise EdgecError(f"SavedModel '{path}' has no Keras metadata and no signatures; export it with a "
                             "serving signature (tf.saved_model.save(..., signatures=...) or Keras 3 model.export())")
        key = signature or ("serving_default" if "serving_default" in signatures else sorted(signatures)[0])
        if key not in signatures:
            raise EdgecError(f"SavedModel '{path}' has no signature '{key}'; it has: {', '.join(sorted(signatures))}")
        self.signature_key = key
        self.function = signatures[key]
        args, kwargs = self.function.structured_input_signature
        specs = {**{str(i): a for i, a in enumerate(args)}, **kwargs}
        if not specs:
            raise EdgecError(f"SavedModel '{path}' signature '{key}' takes no inputs")
        self.input_names = list(input_order) if input_order and sorted(input_order) == sorted(specs) \
            else sorted(specs)
        self.input_name = self.input_names[0]
        self.inputs = [specs[n] for n in self.input_names]
        outputs = self.function.structured_outputs
        if not isinstance(outputs, dict) or not outputs:
            raise EdgecError(f"SavedModel '{path}' signature '{key}' returns no named outputs")
        # the exporter's order when it gave one (Keras 3's outputs), else sorted keys
        self.output_keys = list(output_order) if output_order and sorted(output_order) == sorted(outputs) \
            else sorted(outputs)
        self.output_shapes = {k: tuple(None if d is None else int(d) for d in outputs[k].shape[1:])
                              for k in self.output_keys}

    def count_params(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in getattr(self.loaded, "variables", [])))

    def __call__(self, x, training: bool = False):  # noqa: ARG002 - the Keras call's signature
        from edgec.tfcompat import tf_and_keras

        tf, _ = tf_and_keras()
        if isinstance(x, dict):
            return self.function(**{n: tf.convert_to_tensor(x[n], dtype=s.dtype)
                                    for n, s in zip(self.input_names, self.inputs, strict=True)})
        return self.function(**{self.input_name: tf.convert_to_tensor(x, dtype=self.inputs[0].dtype)})


def leaf_paths(structure, prefix: tuple[str, ...] = ()):
    """``a/b`` paths of the leaves of a nested structure, in ``tf.nest`` order (dict keys sorted)."""
    if isinstance(structure, dict):
        for key in sorted(structure):
            yield from leaf_paths(structure[key], (*prefix, str(key)))
    elif isinstance(structure, (list, tuple)):
        for i, value in enumerate(structure):
            yield from leaf_paths(value, (*prefix, str(i)))
    else:
        yield "/".join(prefix)

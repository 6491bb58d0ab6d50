"""The bridge from a Keras 3 model to tf-keras, for the compression steps (TF-MOT trains tf-keras
layers only).

The graph is rebuilt layer by layer from the Keras 3 configs, mapped to what tf-keras reads
(dtype policies as names, serialized objects without their module, ``InputLayer(batch_shape)``
as ``batch_input_shape``, Keras 3 call nodes as tf-keras inbound nodes, a Sequential model as
a functional one, nested models recursively, activations whose definition differs between the
two by functions that compute the Keras 3 one). The weights are copied layer by layer, and
:func:`check` runs both models on calibration samples before any step: the tf-keras model must
compute the same function, and the largest difference is recorded in the manifest.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import numpy as np

from edgec.errors import EdgecError

log = logging.getLogger(__name__)

NO_COUNTERPART = ("the compression steps train tf-keras layers: register a tf-keras version of it under the same "
                  "name (tf_keras.utils.register_keras_serializable) in a --custom-objects module, or build without "
                  "compression steps (Keras 3's own export)")
# keys tf-keras' base Layer takes besides those of each class's __init__
_BASE_KEYS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape",
              "batch_size", "weights", "activity_regularizer", "autocast"}
_NEUTRAL = (None, False, 0, "", (), [], {})
# Keras 3 ops called on symbolic tensors (``x + 3.0``, ``keras.ops.sigmoid(x)``) as the TensorFlow
# functions tf-keras wraps in TFOpLambda layers: (function, names of the positional arguments after the first)
_OPS = {
    "Add": ("math.add", ("y",)), "Subtract": ("math.subtract", ("y",)), "Multiply": ("math.multiply", ("y",)),
    "Divide": ("math.truediv", ("y",)), "TrueDivide": ("math.truediv", ("y",)),
    "Maximum": ("math.maximum", ("y",)), "Minimum": ("math.minimum", ("y",)), "Power": ("math.pow", ("y",)),
    "Sigmoid": ("math.sigmoid", ()), "Relu": ("nn.relu", ()), "Tanh": ("math.tanh", ()), "Exp": ("math.exp", ()),
    "Sqrt": ("math.sqrt", ()), "Negative": ("math.negative", ()), "Abs": ("math.abs", ()),
    "Square": ("math.square", ()),
}
_COMMUTATIVE = {"Add", "Multiply", "Maximum", "Minimum"}


def _keras3_activations():
    """tf-keras functions for the Keras 3 activations tf-keras lacks or defines differently
    (Keras 3's ``hard_sigmoid`` is relu6(x + 3) / 6, tf-keras' is 0.2 x + 0.5), registered once."""
    import tf_keras

    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    existing = tf_keras.saving.get_registered_object("edgec>k3_hard_sigmoid")
    if existing is None:
        register = tf_keras.saving.register_keras_serializable(package="edgec")

        @register
        def k3_hard_sigmoid(x):
            return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

        @register
        def k3_hard_silu(x):
            return x * (tf.nn.relu6(x + 3.0) * (1.0 / 6.0))

    return {"hard_sigmoid": "edgec>k3_hard_sigmoid", "hard_silu": "edgec>k3_hard_silu",
            "hard_swish": "edgec>k3_hard_silu", "silu": "swish"}


def _accepted(cls) -> set[str] | None:
    """The config keys a tf-keras class takes (``None``: any, it has no fixed list)."""
    keys: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        keys.update(n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self")
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return keys
        if klass.__name__ == "Layer":
            return keys | _BASE_KEYS
    return None


class _Rebuild:
    """One conversion of a Keras 3 model config into a tf-keras one."""

    def __init__(self):
        import tf_keras

        self.tk = tf_keras
        self.activations = _keras3_activations()

    # serialized objects (initializers, regularizers, constraints, dtype policies, activations)
    def value(self, value, where: str):
        if isinstance(value, dict):
            if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "config" in value:
                return value["config"]["name"]
            if value.get("class_name") == "__tuple__":
                return tuple(self.value(v, where) for v in value["config"]["value"])
            if "class_name" in value and "config" in value and "module" in value:
                return self.object(value, where)
            return {k: self.value(v, where) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(v, where) for v in value)
        return value

    def object(self, value: dict, where: str) -> dict:
        module = str(value.get("module") or "")
        name, config = value["class_name"], value["config"]
        if module.startswith("keras."):  # a built-in: keep the keys tf-keras' class of that name takes
            kind = module.rsplit(".", 1)[-1]
            cls = getattr(getattr(self.tk, kind, None), name, None)
            if isinstance(config, dict) and isinstance(cls, type):
                config = self.filter(cls, config, where)
            return {"class_name": name, "config": self.value(config, where)}
        return {"class_name": value.get("registered_name") or name, "config": self.value(config, where)}

    def filter(self, cls, config: dict, where: str) -> dict:
        accepted = _accepted(cls)
        if accepted is None:
            return dict(config)
        out = {}
        for key, value in config.items():
            if key in accepted:
                out[key] = value
            elif not any(value is n or (type(value) is type(n) and value == n) for n in _NEUTRAL):
                raise EdgecError(f"layer {where}: its Keras 3 option {key}={value!r} has no tf-keras counterpart; "
                                 f"{NO_COUNTERPART}")
        return out

    # layers
    def layer(self, entry: dict) -> dict:
        class_name, module = entry["class_name"], str(entry.get("module") or "")
        config, name = entry["config"], entry.get("name") or entry["config"].get("name")
        where = f"'{name}' ({class_name})"
        if ".ops." in module or module.startswith("keras.ops"):
            return self.op(entry, name, where)
        if class_name in ("Functional", "Model") and "layers" in config:
            out = {"class_name": "Functional", "config": self.functional(config)}
        elif class_name == "Sequential":
            out = {"class_name": "Sequential", "config": self.sequential(config)}
        elif module.startswith("keras.") and entry.get("registered_name") in (None, class_name):
            cls = getattr(self.tk.layers, class_name, None)
            if cls is None:
                raise EdgecError(f"layer {where} is a Keras 3 layer with no tf-keras counterpart; {NO_COUNTERPART}")
            config = dict(config)
            if class_name == "InputLayer":
                config["batch_input_shape"] = config.pop("batch_shape", None) or config.pop("batch_input_shape")
                config.pop("optional", None)
            if isinstance(config.get("activation"), str):
                config["activation"] = self.activations.get(config["activation"], config["activation"])
            out = {"class_name": class_name, "config": self.value(self.filter(cls, config, where), where)}
        else:
            registered = entry.get("registered_name") or class_name
            if self.tk.saving.get_registered_object(registered) is None:
                raise EdgecError(f"layer {where} is a Keras 3 custom layer ('{registered}') with no tf-keras "
                                 f"counterpart; {NO_COUNTERPART}")
            out = {"class_name": registered, "config": self.value(config, where)}
        out["config"]["name"] = name
        out["name"] = name
        if "inbound_nodes" in entry:
            out["inbound_nodes"] = [self.node(n, where) for n in entry["inbound_nodes"]]
        return out

    def op(self, entry: dict, name: str, where: str) -> dict:
        """A Keras 3 op on symbolic tensors as a tf-keras TFOpLambda layer."""
        class_name = entry["class_name"]
        extra = {k: v for k, v in (entry.get("config") or {}).items() if k != "name"}
        if class_name not in _OPS or extra:
            raise EdgecError(f"layer {where} is a Keras 3 op with no tf-keras counterpart in the bridge; "
                             f"{NO_COUNTERPART}")
        function, names = _OPS[class_name]
        nodes = []
        for node in entry.get("inbound_nodes") or []:
            args, kwargs = list(node.get("args") or ()), dict(node.get("kwargs") or {})
            if kwargs or len(args) != 1 + len(names):
                raise EdgecError(f"layer {where} (Keras 3 op) is called in a form the bridge does not map; "
                                 f"{NO_COUNTERPART}")
            if not _is_tensor(args[0]) and class_name in _COMMUTATIVE and _is_tensor(args[1]):
                args = [args[1], args[0]]
            if not _is_tensor(args[0]):
                raise EdgecError(f"layer {where} (Keras 3 op) takes a constant first, which the bridge does not "
                                 f"map; {NO_COUNTERPART}")
            rest = {n: self.ref(a, where) if _is_tensor(a) else a for n, a in zip(names, args[1:], strict=True)}
            nodes.append([*self.ref(args[0], where), {**rest, "name": None}])  # TFOpLambda keeps the structure
        return {"class_name": "TFOpLambda", "name": name, "inbound_nodes": nodes,
                "config": {"name": name, "trainable": True, "dtype": "float32", "function": function}}

    def node(self, node, where: str) -> list:
        """A Keras 3 call node ``{args, kwargs}`` as a tf-keras inbound node ``[[layer, node, tensor, kwargs]]``."""
        if not isinstance(node, dict):  # already in the tf-keras form
            return node
        args, kwargs = list(node.get("args") or ()), dict(node.get("kwargs") or {})
        if not args:
            raise EdgecError(f"layer {where} is called without a positional input; {NO_COUNTERPART}")
        first, rest = args[0], args[1:]
        if rest:
            raise EdgecError(f"layer {where} is called with {len(args)} positional inputs, which the bridge does not "
                             f"map; {NO_COUNTERPART}")
        refs = first if isinstance(first, (list, tuple)) else [first]
        extra = {k: self.ref(v, where) if _is_tensor(v) else self.value(v, where) for k, v in kwargs.items()}
        return [[*self.ref(r, where), extra] for r in refs]

    def ref(self, value, where: str) -> list:
        if not _is_tensor(value):
            raise EdgecError(f"layer {where} takes a constant where the bridge expects a tensor; {NO_COUNTERPART}")
        layer, node_index, tensor_index = value["config"]["keras_history"]
        return [layer, node_index, tensor_index]

    # models
    def functional(self, config: dict) -> dict:
        def endpoints(spec, top=True):
            if isinstance(spec, dict):  # dict outputs: one reference per key, as tf-keras writes them
                return {k: endpoints(v, top=False) for k, v in spec.items()}
            spec = list(spec)
            if spec and isinstance(spec[0], str):
                return [spec] if top else spec
            return [endpoints(s, top=False) for s in spec]

        out = {"name": config["name"], "trainable": config.get("trainable", True),
               "layers": [self.layer(e) for e in config["layers"]],
               "input_layers": endpoints(config["input_layers"]),
               "output_layers": endpoints(config["output_layers"])}
        _renumber_nested(out)
        return out

    def sequential(self, config: dict) -> dict:
        layers = [self.layer(e) for e in config["layers"]]
        if not layers or layers[0]["class_name"] != "InputLayer":
            shape = config.get("build_input_shape")
            if shape is None:
                raise EdgecError(f"Sequential model '{config['name']}' was never built (no input shape); "
                                 "save it after calling it once or with an Input")
            layers.insert(0, {"class_name": "InputLayer", "config": {"batch_input_shape": tuple(shape),
                                                                     "name": f"{config['name']}_input"}})
        return {"name": config["name"], "layers": layers}


def _renumber_nested(config: dict) -> None:
    """tf-keras counts a nested model's calls from 1 (its node 0 links its own inputs to its
    outputs), Keras 3 from 0: shift the references to nested models, then check every reference
    names a call that exists (tf-keras loops forever on one that does not)."""
    nested = {e["name"] for e in config["layers"] if e["class_name"] in ("Functional", "Sequential")}
    calls = {e["name"]: len(e.get("inbound_nodes") or []) + (e["name"] in nested) for e in config["layers"]}
    calls.update({e["name"]: 1 for e in config["layers"] if e["class_name"] == "InputLayer"})

    def fix(ref: list) -> None:
        name, index = ref[0], ref[1]
        if name in nested:
            ref[1] = index = index + 1
        if name not in calls or index >= calls[name]:
            raise EdgecError(f"the Keras 3 graph of model '{config['name']}' refers to call {ref[1]} of layer "
                             f"'{name}', which the bridge cannot map; {NO_COUNTERPART}")

    def walk(value) -> None:
        if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
            fix(value)
            for extra in value[3:]:
                walk(extra)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for entry in config["layers"]:
        walk(entry.get("inbound_nodes") or [])
    walk(config["output_layers"])


def _is_tensor(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def rebuild(model):
    """A tf-keras model with the architecture and weights of the Keras 3 ``model``.

    Raises:
        EdgecError: a layer with no tf-keras counterpart (named), or weights that do not fit.
    """
    conversion = _Rebuild()
    tk = conversion.tk
    config = model.get_config()
    try:
        if type(model).__name__ == "Sequential":
            sequential = tk.Sequential.from_config(conversion.sequential(config))
            rebuilt = tk.Model(sequential.inputs, sequential.outputs, name=sequential.name)  # functional
        else:
            if "layers" not in config:
                raise EdgecError(f"model '{model.name}' ({type(model).__name__}) is a subclassed Keras 3 model, whose "
                                 "graph has no config to rebuild; wrap its layers in a functional model, or build "
                                 "without compression steps (Keras 3's own export)")
            rebuilt = tk.Model.from_config(conversion.functional(config))
    except EdgecError:
        raise
    except Exception as exc:  # tf-keras raises ValueError/TypeError/KeyError while deserializing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgecError(f"cannot rebuild Keras 3 model '{model.name}' in tf-keras: {reason[:300]}") from exc
    _copy_weights(model, rebuilt)
    return rebuilt


def _copy_weights(source, target) -> None:
    for layer in source.layers:
        try:
            twin = target.get_layer(layer.name)
        except ValueError:
            raise EdgecError(f"layer '{layer.name}' of the Keras 3 model has no twin in its tf-keras rebuild") from None
        if hasattr(layer, "layers") and hasattr(twin, "layers"):  # a nested model
            _copy_weights(layer, twin)
            continue
        values = layer.get_weights()
        shapes = [tuple(w.shape) for w in twin.weights]
        if [tuple(v.shape) for v in values] != shapes:
            raise EdgecError(f"layer '{layer.name}' ({type(layer).__name__}) holds weights of shapes "
                             f"{[tuple(v.shape) for v in values]} in Keras 3 but {shapes} in tf-keras; {NO_COUNTERPART}")
        twin.set_weights(values)


def to_tf_keras(loaded):
    """``loaded`` (a Keras 3 model kept for the bridge) with its model rebuilt in tf-keras."""
    import dataclasses

    return dataclasses.replace(loaded, model=rebuild(loaded.keras3_model))


def check(loaded, x: np.ndarray, samples: int = 32) -> dict[str, Any]:
    """Run the Keras 3 model and its tf-keras rebuild on the first ``samples`` inputs of ``x`` and
    record the largest absolute difference per output (``loaded.keras['bridge']``).

    Raises:
        EdgecError: the rebuild computes another function (the message names the first layer whose
            output differs).
    """
    import keras

    from edgec.keras3 import output_names

    if isinstance(x, dict):  # several inputs: a list in the model's input order, as both models take it
        from edgec.keras3 import input_names

        x = [np.asarray(x[n][:samples], dtype=np.float32) for n in input_names(loaded.keras3_model)]
    else:
        x = np.asarray(x[:samples], dtype=np.float32)
    ref = [np.asarray(o, dtype=np.float32) for o in keras.tree.flatten(loaded.keras3_model(x, training=False))]
    got = [np.asarray(o, dtype=np.float32) for o in keras.tree.flatten(loaded.model(x, training=False))]
    names = output_names(loaded.keras3_model)
    outputs, worst, failed = {}, 0.0, None
    for name, r, g in zip(names, ref, got, strict=True):
        diff = float(np.max(np.abs(r - g))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        tolerance = _tolerance(scale)
        outputs[name] = {"max_abs_diff": diff, "max_abs_output": scale, "tolerance": tolerance}
        worst = max(worst, diff)
        if diff > tolerance and failed is None:
            failed = (name, diff, tolerance)
    count = len(x[0]) if isinstance(x, list) else len(x)
    record = {"samples": int(count), "max_abs_diff": worst, "outputs": outputs}
    loaded.keras["bridge"] = record
    log.info("Keras 3 -> tf-keras: max abs difference %.3g on %d samples", worst, count)
    if failed is not None:
        layer = _first_differing_layer(loaded.keras3_model, loaded.model, x)
        raise EdgecError(f"the tf-keras rebuild of the Keras 3 model computes another function: output '{failed[0]}' "
                         f"differs by {failed[1]:.3g} (tolerance {failed[2]:.3g}) on {count} samples"
                         + (f", first at layer '{layer}'" if layer else "") + f"; {NO_COUNTERPART}")
    return record


def _tolerance(scale: float) -> float:
    """What float32 allows between the two: the same layers computed by other kernels (tf-keras'
    fused BatchNormalization, Keras 3's unfused one) differ by about 1e-7 of their scale, which a
    deep network amplifies layer after layer (ResNet50: 2e-7 after its first convolution, 6e-4 at
    its output); a wrong mapping (an activation, an option) costs far more than 1 %."""
    return 1e-2 * max(scale, 1e-6)


def _first_differing_layer(source, rebuilt, x) -> str | None:
    """The first layer (in the Keras 3 model's order) whose output differs between the two."""
    import keras

    names = [layer.name for layer in source.layers
             if type(layer).__name__ != "InputLayer" and not isinstance(layer.output, (list, tuple, dict))]
    try:
        probe3 = keras.Model(source.inputs, [source.get_layer(n).output for n in names])
        probe2 = type(rebuilt)(rebuilt.inputs, [rebuilt.get_layer(n).output for n in names])
        for name, a, b in zip(names, probe3(x, training=False), probe2(x, training=False), strict=True):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape or np.max(np.abs(a - b)) > _tolerance(float(np.max(np.abs(a)))):
                return name
    except Exception:  # noqa: BLE001 - naming the layer is a courtesy; the check itself already failed
        return None
    return None

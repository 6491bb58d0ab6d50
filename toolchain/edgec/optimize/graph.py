"""Model plumbing shared by the steps: private copies, layer checks, kernel statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from edgec.errors import EdgecError


def check_rebuildable(model) -> None:
    """The steps rebuild the model layer by layer; fail early, naming the layer, when they cannot.

    Raises:
        EdgecError: a subclassed model, a nested model, or a layer that cannot be re-created
            from its config.
    """
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise EdgecError(f"model '{model.name}' is a subclassed keras.Model; pruning, clustering and QAT need a "
                         "Sequential or functional model (rebuild it with keras.Input and layer calls)")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise EdgecError(f"layer '{layer.name}' is a nested model ({type(layer).__name__}); TF-MOT cannot wrap "
                             "models inside models: flatten it into one functional model")
        try:
            config = layer.get_config()
            layer.__class__.from_config(config)
        except Exception as exc:  # NotImplementedError, TypeError from a custom __init__, ...
            raise EdgecError(
                f"layer '{layer.name}' ({type(layer).__name__}) cannot be re-created from its config "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); compression rebuilds "
                "the model layer by layer: give the layer a get_config() returning its constructor arguments"
            ) from exc
        if "name" not in config:  # TF-MOT's graph transforms find layers by the name in their config
            raise EdgecError(
                f"layer '{layer.name}' ({type(layer).__name__}) has a config without 'name'; compression rebuilds "
                "the model from layer configs: accept **kwargs in __init__, pass them to super().__init__, and "
                "start get_config() from super().get_config()"
            )


def rebuilding_in_memory():
    """Let TF-MOT re-create Lambda layers of a model that is already loaded.

    TF-MOT's layout transform rebuilds the model from its config, and tf-keras refuses Python
    lambdas there unless safe mode is off. The model is in memory already, so re-creating its
    own layers trusts nothing new; the scope ends with the call.
    """
    try:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # another tf-keras layout: rebuilding Lambda layers may fail, the rest works
        return contextlib.nullcontext()
    return SafeModeScope(False)


def private_copy(model):
    """A copy with its own layers and weights, so wrapping it never changes ``model``."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def inner(layer):
    """The layer a TF-MOT wrapper holds (the layer itself when not wrapped)."""
    return getattr(layer, "layer", layer)


#: the weight variables that are a layer's kernels (SeparableConv2D has two), in the order they run
KERNEL_NAMES = ("depthwise_kernel", "kernel", "pointwise_kernel", "embeddings")


def kernels_of(layer) -> list[tuple[str, Any]]:
    """Every kernel variable of a Conv/Dense-like layer, ``(name, variable)`` in the order they run:
    one for Conv2D/Dense/DepthwiseConv2D, two for SeparableConv2D (depthwise, pointwise)."""
    layer = inner(layer)
    found = []
    for name in KERNEL_NAMES:
        var = getattr(layer, name, None)
        if var is not None and hasattr(var, "numpy"):
            found.append((name, var))
    return found


def kernel_of(layer) -> Any | None:
    """The largest kernel variable of a layer (the one weight sharing and size checks consider)."""
    found = kernels_of(layer)
    return max((v for _, v in found), key=lambda v: int(np.prod(v.shape))) if found else None


def _kernel_stats(name: str, k: np.ndarray) -> dict[str, Any]:
    if name == "depthwise_kernel" and k.ndim == 4:  # (h, w, in, multiplier): in x multiplier channels
        per_channel = k.reshape(k.shape[0] * k.shape[1], -1)
    else:
        per_channel = k.reshape(-1, k.shape[-1]) if k.ndim >= 2 else k.reshape(-1, 1)
    return {
        "kernel": name,
        "params": int(k.size),
        "zero_share": round(float((k == 0).mean()), 6),
        "unique_per_channel": int(max(np.unique(per_channel[:, c]).size for c in range(per_channel.shape[1]))),
        "unique": int(np.unique(k).size),
    }


def kernel_stats(model, which: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """Per layer with kernels: parameters, zero share, most unique values per output channel and
    over the kernel, measured on the Keras weights (the artifact is measured separately), with one
    row per kernel under ``kernels``. The totals count the kernels named in ``which`` (layer ->
    kernel names a step acted on), else all of them."""
    stats = {}
    for layer in model.layers:
        found = kernels_of(layer)
        if not found:
            continue
        name = inner(layer).name
        rows = [_kernel_stats(kname, np.asarray(var.numpy())) for kname, var in found]
        counted = [r for r in rows if which is None or r["kernel"] in which.get(name, [r["kernel"]])] or rows
        params = sum(r["params"] for r in counted)
        stats[name] = {
            "params": params,
            "zero_share": round(sum(r["zero_share"] * r["params"] for r in counted) / params, 6) if params else 0.0,
            "unique_per_channel": max(r["unique_per_channel"] for r in counted),
            "unique": max(r["unique"] for r in counted),
            "kernels": rows,
        }
    return stats


def structure_keeper(model, reference, layer_names, *, zeros: bool, clusters: int | None):
    """A Keras callback that puts the zeros and the shared values of ``reference``'s kernels back
    into ``model`` after every training batch, for the layers named in ``layer_names``.

    Used where TF-MOT would not keep them: a layer a step does not wrap, QAT with a target's own
    scheme, and layers QAT rebuilds (SeparableConv2D becomes a DepthwiseConv2D and a Conv2D, whose
    new variables TF-MOT's preserving schemes never saw). Every kernel of a layer is kept (both of
    a SeparableConv2D). Shared values are kept as in Deep Compression: each weight stays in its
    cluster and a cluster's value moves to the mean of its weights. Zeros stay zero.

    ``model``'s variables are found by name, else by value: when the callback is made, a kernel
    of ``model`` holds exactly the values of the reference kernel it came from.

    Returns:
        ``(callback, number of kernels it keeps)``; the callback is ``None`` when there is nothing
        to keep.
    """
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    names = set(layer_names)
    variables = {v.name: v for v in model.weights}
    by_shape: dict[tuple, list] = {}
    for v in model.weights:
        by_shape.setdefault(tuple(v.shape), []).append(v)
    entries = []
    for layer in reference.layers:
        if layer.name not in names:
            continue
        for _, kvar in kernels_of(layer):
            k = np.asarray(kvar.numpy())
            mask = (k != 0).astype(k.dtype) if zeros and (k == 0).any() else None
            groups = None
            if clusters:
                uniq, inverse = np.unique(k, return_inverse=True)
                groups = inverse.reshape(k.shape) if len(uniq) <= clusters else None  # None: not clustered
            if mask is None and groups is None:
                continue
            # a wrapper owns the kernel variable now; it keeps the layer's variable name
            target = variables.get(f"{layer.name}/{kvar.name.split('/')[-1]}")
            if target is None:
                same = [v for v in by_shape.get(tuple(k.shape), []) if np.array_equal(np.asarray(v.numpy()), k)]
                target = same[0] if len(same) == 1 else None
            if target is not None:
                entries.append((target, mask, groups))
    if not entries:
        return None, 0

    class KeepStructure(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for var, mask, groups in entries:
                w = var.numpy()
                if groups is not None:
                    flat = groups.ravel()
                    means = np.bincount(flat, weights=w.ravel()) / np.maximum(np.bincount(flat), 1)
                    w = means[groups].astype(w.dtype)
                if mask is not None:
                    w = w * mask
                var.assign(w)

    return KeepStructure(), len(entries)


_FOLDABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


class Reused(list):
    """A tensor_dict entry for Node.map_arguments that hands out its tensor however often it is used."""

    def pop(self, index=-1):  # noqa: ARG002 - the list interface
        return self[0]


def fresh_inputs(model) -> list:
    """New ``keras.Input`` tensors like ``model``'s, named after its input layers (a rebuilt model
    keeps its input names)."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    return [keras.Input(shape=tuple(t.shape[1:]), batch_size=t.shape[0], dtype=t.dtype,
                        name=t._keras_history.layer.name) for t in model.inputs]  # noqa: SLF001


def rebuild(model, replace: Callable[[Any, list, dict], Any] | None = None):
    """A new functional model computing ``model``'s graph node by node, its inputs and output
    layers keeping their names. ``replace(layer, args, kwargs)`` returns the outputs of a layer
    it changes (new layers called on ``args``) or None for a copy of the layer with its config and
    weights; without it the copy is exact."""
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    new_inputs = fresh_inputs(model)
    tensors: dict[str, list] = {str(id(x)): Reused([y]) for x, y in zip(model.inputs, new_inputs, strict=True)}
    with rebuilding_in_memory():
        for node in nodes_in_order(model):
            if node.is_input or any(i not in tensors for i in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensors)
            layer = node.layer
            outputs = replace(layer, args, kwargs) if replace is not None else None
            if outputs is None:
                clone = layer.__class__.from_config(layer.get_config())
                outputs = clone(*args, **kwargs)
                clone.set_weights(layer.get_weights())
            for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs), strict=True):
                tensors[x_id] = Reused([y])
    outputs = [tensors[str(id(x))][0] for x in model.outputs]
    return keras.Model(new_inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def fold_batchnorm(model) -> tuple[Any, list[str]]:
    """A copy of ``model`` with every BatchNormalization that follows a Conv2D, DepthwiseConv2D or
    Dense layer (linear activation, no other consumer) folded into that layer's kernel and bias.

    The converter folds them the same way in the artifact, multiplying each output channel by its
    own factor; folding first lets weight sharing act on the kernel the artifact stores. The copy
    computes the same function (inference mode). Models that are not functional are returned as is.

    Returns:
        ``(model, names of the folded BatchNormalization layers)``.
    """
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    if not getattr(model, "_is_graph_network", False):
        return model, []
    folds: dict[str, Any] = {}  # producing layer name -> its BatchNormalization
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:  # noqa: SLF001
            continue
        parents = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001
        producer = parents[0] if isinstance(parents, list) and len(parents) == 1 else parents
        if (isinstance(producer, list) or type(producer).__name__ not in _FOLDABLE
                or len(producer._inbound_nodes) != 1 or len(producer._outbound_nodes) != 1  # noqa: SLF001
                or producer.get_config().get("activation", "linear") != "linear"):
            continue
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(layer.input_shape)
        if axis is None or axis not in (-1, rank - 1):
            continue
        folds[producer.name] = layer
    if not folds:
        return model, []
    skipped = {bn.name for bn in folds.values()}

    def folded_layer(layer, args, kwargs):
        if layer.name in skipped:
            return args[0]
        if layer.name not in folds:
            return None
        clone = layer.__class__.from_config({**layer.get_config(), "use_bias": True})
        outputs = clone(*args, **kwargs)
        clone.set_weights(_folded(layer, folds[layer.name]))
        return outputs

    folded = rebuild(model, folded_layer)
    return folded, sorted(skipped)


def _folded(layer, bn) -> list[np.ndarray]:
    """Kernel and bias of ``layer`` with ``bn`` (inference statistics) folded in."""
    weights = {w.name.split("/")[-1].split(":")[0]: np.asarray(w.numpy(), dtype=np.float64) for w in layer.weights}
    kernel_name = "depthwise_kernel" if "depthwise_kernel" in weights else "kernel"
    kernel = weights[kernel_name]
    stats = {w.name.split("/")[-1].split(":")[0]: np.asarray(w.numpy(), dtype=np.float64) for w in bn.weights}
    factor = stats.get("gamma", 1.0) / np.sqrt(stats["moving_variance"] + bn.epsilon)
    beta = stats.get("beta", 0.0)
    bias = weights.get("bias", np.zeros_like(stats["moving_mean"]))
    if kernel_name == "depthwise_kernel":  # (h, w, in, multiplier): output channel = in * multiplier + m
        kernel = kernel * factor.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * factor
    bias = (bias - stats["moving_mean"]) * factor + beta
    dtype = layer.weights[0].dtype.as_numpy_dtype
    return [kernel.astype(dtype), bias.astype(dtype)]


def nodes_in_order(model) -> list:
    """The model's own call nodes (inputs included), producers before consumers."""
    return [node for depth in sorted(model._nodes_by_depth, reverse=True)  # noqa: SLF001
            for node in model._nodes_by_depth[depth]]  # noqa: SLF001


def shape_of(tensor) -> tuple:
    return tuple(int(d) if d is not None else None for d in tensor.shape)


def prod(values) -> int:
    return int(np.prod([v for v in values if v is not None], dtype=np.int64)) if values else 1


def node_macs(layer, in_shape: tuple, out_shape: tuple) -> int:
    """Multiply-accumulates of one call of a Conv/Dense-like layer, per sample (0 for other layers).

    Shapes include the batch axis. BatchNormalization and element-wise ops are left out: the
    converter folds the first, and the second cost no multiplies worth counting next to these.
    """
    layer = inner(layer)
    kind = type(layer).__name__
    cfg = layer.get_config()
    if kind == "Dense":
        return prod(out_shape[1:-1]) * int(in_shape[-1]) * int(cfg["units"])
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return prod(out_shape[1:-1]) * prod(cfg["kernel_size"]) * int(out_shape[-1])
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        mid = int(in_shape[-1]) * int(cfg.get("depth_multiplier", 1))
        return prod(out_shape[1:-1]) * (prod(cfg["kernel_size"]) * mid + mid * int(out_shape[-1]))
    if kind in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        return prod(in_shape[1:-1]) * prod(cfg["kernel_size"]) * int(in_shape[-1]) * int(out_shape[-1])
    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        groups = int(cfg.get("groups", 1) or 1)
        return prod(out_shape[1:-1]) * prod(cfg["kernel_size"]) * (int(in_shape[-1]) // groups) * int(out_shape[-1])
    return 0


def layer_costs(model) -> dict[str, dict[str, int]]:
    """Per layer of a functional or Sequential model: parameters and MACs per sample, summed over
    the layer's calls; TF-MOT wrappers are looked through (their masks and ranges not counted)."""
    costs: dict[str, dict[str, int]] = {}
    for node in nodes_in_order(model):
        if node.is_input:
            continue
        layer = node.layer
        if layer.name not in costs:
            costs[layer.name] = {"params": int(inner(layer).count_params()), "macs": 0}
        if node.keras_inputs:
            outputs = flat(node.outputs)
            costs[layer.name]["macs"] += node_macs(layer, shape_of(node.keras_inputs[0]), shape_of(outputs[0]))
    return costs


def flat(structure) -> list:
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    return tf.nest.flatten(structure)


def totals(model) -> dict[str, int]:
    """Parameters (all weights, as ``count_params``) and MACs per sample of the whole model."""
    costs = layer_costs(model)
    return {"params": int(sum(c["params"] for c in costs.values())), "macs": int(sum(c["macs"] for c in costs.values()))}


def compare(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """Two :func:`totals` side by side: before, after, after/before and the cut in percent."""
    return {key: {"before": before[key], "after": after[key],
                  "ratio": round(after[key] / before[key], 6) if before[key] else None,
                  "cut_percent": round(100.0 * (1 - after[key] / before[key]), 3) if before[key] else None}
            for key in ("params", "macs")}


RECALIBRATION_SAMPLES = 512


def recalibrate_batchnorm(model, x: np.ndarray, limit: int = RECALIBRATION_SAMPLES) -> int:
    """Set every BatchNormalization's moving mean and variance to the statistics of its input over
    the first ``limit`` samples of ``x``, with the model's current weights.

    A model rebuilt with fewer channels or factorized kernels feeds its BatchNorm layers data of
    another spread; fine-tuning moves the moving averages only slowly (momentum 0.99), so the
    inference-mode model lags behind the trained weights. One forward pass in training mode with
    momentum 0 on one large batch gives each layer the population statistics of its input, in
    order, as inference will see it (dropout is switched off for the pass).

    Returns:
        The number of BatchNormalization layers recalibrated.
    """
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    norms = [inner(layer) for layer in model.layers if isinstance(inner(layer), keras.layers.BatchNormalization)]
    from edgec.calibration import count, take

    if not norms or count(x) == 0:
        return 0
    noisy = [layer for layer in model.layers if isinstance(getattr(layer, "rate", None), float)]
    saved = [(layer, layer.momentum) for layer in norms], [(layer, layer.rate) for layer in noisy]
    try:
        for layer in norms:
            layer.momentum = 0.0
        for layer in noisy:
            layer.rate = 0.0
        model(take(x, slice(0, limit)), training=True)
    finally:
        for layer, momentum in saved[0]:
            layer.momentum = momentum
        for layer, rate in saved[1]:
            layer.rate = rate
    return len(norms)

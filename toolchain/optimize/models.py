"""Model plumbing shared by the steps: private copies, layer checks, kernel statistics."""

from __future__ import annotations

import contextlib
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
            layer.__class__.from_config(layer.get_config())
        except Exception as exc:  # NotImplementedError, TypeError from a custom __init__, ...
            raise EdgecError(
                f"layer '{layer.name}' ({type(layer).__name__}) cannot be re-created from its config "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); compression rebuilds "
                "the model layer by layer: give the layer a get_config() returning its constructor arguments"
            ) from exc


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


def kernel_of(layer) -> Any | None:
    """The main weight variable of a Conv/Dense-like layer (``kernel``/``depthwise_kernel``)."""
    layer = inner(layer)
    for name in ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"):
        var = getattr(layer, name, None)
        if var is not None and hasattr(var, "numpy"):
            return var
    return None


def kernel_stats(model) -> dict[str, dict[str, Any]]:
    """Per layer with a kernel: parameters, zero share, most unique values per output channel and
    over the whole kernel, measured on the Keras weights (the artifact is measured separately)."""
    stats = {}
    for layer in model.layers:
        var = kernel_of(layer)
        if var is None:
            continue
        k = np.asarray(var.numpy())
        per_channel = k.reshape(-1, k.shape[-1]) if k.ndim >= 2 else k.reshape(-1, 1)
        stats[inner(layer).name] = {
            "params": int(k.size),
            "zero_share": round(float((k == 0).mean()), 6),
            "unique_per_channel": int(max(np.unique(per_channel[:, c]).size for c in range(per_channel.shape[1]))),
            "unique": int(np.unique(k).size),
        }
    return stats

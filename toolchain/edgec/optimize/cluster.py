"""Weight clustering (Deep Compression's weight sharing) with TF-MOT.

Each clustered kernel keeps N shared values over the whole kernel, and so does its int8 twin in
the artifact.
TF-MOT's per-channel clustering is not used: cluster-preserving QAT re-assigns weights to the
nearest of all channels' centroids once the channels' centroid counts differ, which breaks the
N-per-channel bound, and its sparsity-preserving per-channel init fails on a channel pruning
emptied. After pruning, clustering preserves the zeros (``preserve_sparsity``). TF-MOT does not
cluster DepthwiseConv2D kernels (by design: the accuracy loss does not recover); they are listed.

A BatchNormalization after a Conv2D/DepthwiseConv2D/Dense is folded into its kernel before any
step runs (:func:`edgec.optimize.graph.fold_batchnorm`): the converter would fold it anyway,
scaling each output channel by its own factor, and the shared values would not survive. Conv2D
kernels are then quantized per tensor during QAT (:mod:`edgec.optimize.qat`), so each clustered
kernel holds at most N distinct int8 values in the artifact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.optimize import graph
from edgec.optimize.spec import OptimizeSpec
from edgec.optimize.train import FineTuneData, fine_tune
from edgec.progress import Progress


def _clusterable(layer, keras) -> tuple[bool, str | None]:
    from tensorflow_model_optimization.python.core.clustering.keras import (
        clusterable_layer,
        clustering_registry,
    )

    if isinstance(layer, keras.layers.InputLayer) or not layer.weights:
        return False, None
    if isinstance(layer, clusterable_layer.ClusterableLayer):
        return True, None
    registry = clustering_registry.ClusteringRegistry
    if not registry.supports(layer):
        return False, f"TF-MOT cannot cluster {type(layer).__name__} layers"
    if type(layer) in registry._LAYERS_WEIGHTS_MAP and not registry._LAYERS_WEIGHTS_MAP[type(layer)]:  # noqa: SLF001
        return False, f"TF-MOT leaves {type(layer).__name__} weights unclustered"
    return True, None


def _clustered_weights(layer_type) -> list[str]:
    """The kernels TF-MOT clusters in a layer of this type (SeparableConv2D: the pointwise one)."""
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    names = clustering_registry.ClusteringRegistry._LAYERS_WEIGHTS_MAP.get(layer_type)  # noqa: SLF001
    return [n for n in (names or []) if n in graph.KERNEL_NAMES]


def cluster(model, data: FineTuneData, spec: OptimizeSpec, progress: Progress, *,
            preserve_sparsity: bool) -> tuple[Any, dict[str, Any]]:
    """Cluster and fine-tune a private copy of ``model``; return it stripped, with what was done."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
        cluster as experimental,
    )

    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    # linear initialisation, as Deep Compression recommends: it keeps the large weights, needs no
    # sampling (k-means++ fails on a pruned kernel with fewer non-zeros of one sign than clusters)
    # and is deterministic
    init = tfmot.clustering.keras.CentroidInitialization.LINEAR
    layers: list[dict[str, Any]] = []

    def wrap(layer):
        ok, reason = _clusterable(layer, keras)
        if not ok:
            if reason:
                layers.append({"layer": layer.name, "type": type(layer).__name__, "clustered": False, "reason": reason})
            return layer
        kernel = graph.kernel_of(layer)
        size = int(np.prod(kernel.shape)) if kernel is not None else None
        if size is not None and size <= spec.cluster:
            layers.append({"layer": layer.name, "type": type(layer).__name__, "clustered": False,
                           "reason": f"{size} weights, not more than {spec.cluster} clusters"})
            return layer
        wrapped = experimental.cluster_weights(layer, number_of_clusters=spec.cluster, cluster_centroids_init=init,
                                               preserve_sparsity=preserve_sparsity)
        if wrapped is layer:  # TF-MOT declined it (too few weights for its rule)
            layers.append({"layer": layer.name, "type": type(layer).__name__, "clustered": False,
                           "reason": "TF-MOT skipped it: too few weights for the clusters"})
            return layer
        layers.append({"layer": layer.name, "type": type(layer).__name__, "clustered": True})
        return wrapped

    try:
        wrapped = keras.models.clone_model(graph.private_copy(model), clone_function=wrap)
    except (ValueError, tf.errors.InvalidArgumentError) as exc:  # TF-MOT's own checks on the kernels
        raise EdgecError(f"clustering to {spec.cluster} values failed: {str(exc).strip().splitlines()[0][:300]}; "
                         "choose a smaller --cluster, or drop --cluster") from exc
    if not any(entry["clustered"] for entry in layers):
        reasons = "; ".join(f"{e['layer']}: {e['reason']}" for e in layers) or "no layer has weights"
        raise EdgecError(f"model '{model.name}' has no layer TF-MOT can cluster ({reasons}); drop --cluster")
    # layers left unclustered keep their pruned zeros by hand (TF-MOT only guards the ones it wraps)
    unclustered = [e["layer"] for e in layers if not e["clustered"]]
    keeper, _ = graph.structure_keeper(wrapped, model, unclustered, zeros=preserve_sparsity, clusters=None)
    fit = fine_tune(wrapped, data, spec, step="cluster", progress=progress, callbacks=[keeper] if keeper else [])
    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    clustered = {e["layer"]: _clustered_weights(type(model.get_layer(e["layer"]))) for e in layers if e["clustered"]}
    stats = graph.kernel_stats(stripped, {k: v for k, v in clustered.items() if v})
    for entry in layers:
        s = stats.get(entry["layer"])
        if s:
            entry.update(params=s["params"], unique=s["unique"], unique_per_channel=s["unique_per_channel"],
                         zero_share=s["zero_share"], kernel_rows=s["kernels"])
    return stripped, {"clusters": spec.cluster, "init": "linear", "preserve_sparsity": preserve_sparsity,
                      "layers": layers, "fine_tune": fit}

"""Quantization-aware training with TF-MOT, keeping what pruning and clustering gave.

The scheme comes from the build's target (``Target.qat_scheme``). When the target has no scheme
of its own (TFLite, Edge TPU), TF-MOT's collaborative schemes keep the earlier steps' work:
pruning-preserving QAT after pruning, cluster-preserving QAT (sparsity-preserving too after
pruning) after clustering. A target scheme (TensorRT's symmetric one) knows nothing of that, so
the zeros and the shared values are put back after every training batch instead.

Layers TF-MOT cannot annotate (Lambda, Rescaling, custom layers, ...) and those named in
``--qat-skip`` stay float during training; the int8 converter still quantizes them, calibrated
on representative data. They are listed in the report.

Two details keep the Keras model and its int8 artifact in step:

* activation ranges start from the ranges seen on the fine-tune data. TF-MOT starts them at
  [-6, 6] and moves them with a 0.999 moving average, which a short fine-tune on a small data set
  never leaves, wasting most of the int8 grid;
* a kernel channel that pruning emptied (all zeros) gets a usable weight range. Its learned range
  is [0, 0], from which the converter derives a tiny weight scale; the bias scale (input scale x
  weight scale) then overflows int32 and the artifact computes a wrong constant for the channel.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.optimize import graph
from edgec.optimize.spec import OptimizeSpec
from edgec.optimize.train import FineTuneData, fine_tune
from edgec.progress import Progress

log = logging.getLogger(__name__)

_RANGE_CALIBRATION_SAMPLES = 512
_KERNEL_RANGE = re.compile(r"(?:^|/)(?:depthwise_)?kernel_(min|max):0$")
_ACTIVATION_RANGE = re.compile(r"(?:^|/)(?:post_activation|output)_(min|max):0$")


def choose_scheme(target_scheme, *, pruned: bool, clustered: bool) -> tuple[Any, str, str]:
    """The QuantizeScheme to use, its name, and how earlier steps are preserved."""
    import tensorflow_model_optimization as tfmot

    if target_scheme is not None:
        keep = "re-applied after every batch" if (pruned or clustered) else "nothing to preserve"
        return target_scheme, type(target_scheme).__name__, keep
    from edgec.optimize.layout import with_layout

    if clustered:
        scheme = _shared_grid_cluster_scheme(pruned)
        return (scheme, "Default8BitClusterPreserveQuantizeScheme, per-tensor Conv2D kernels",
                "cluster and sparsity preserving" if pruned else "cluster preserving")
    if pruned:
        scheme = with_layout(tfmot.quantization.keras.collab_opts.Default8BitPrunePreserveQuantizeScheme)()
        return scheme, type(scheme).__name__, "sparsity preserving"
    scheme = with_layout(tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme)()
    return scheme, type(scheme).__name__, "nothing to preserve"


def _shared_grid_cluster_scheme(preserve_sparsity: bool):
    """TF-MOT's cluster-preserving scheme with Conv2D kernels quantized per tensor, as Dense ones are.

    Per output channel, each channel scales the kernel's N shared values by its own factor, so the
    int8 kernel holds up to N x channels distinct values; one scale per kernel keeps N in all, which
    is what a codebook (Deep Compression's weight sharing) stores. The shared values are few and far
    apart, so one scale loses nothing a per-channel scale would have kept.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        cluster_preserve_quantize_registry as registry,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as scheme,
    )

    from edgec.optimize.layout import with_layout

    class Registry(registry.Default8bitClusterPreserveQuantizeRegistry):
        def __init__(self, preserve_sparsity):
            super().__init__(preserve_sparsity)
            self._config_quantizer_map["Default8BitConvQuantizeConfig"] = (
                registry.ClusterPreserveDefault8BitWeightsQuantizer(preserve_sparsity))

    class Scheme(with_layout(scheme.Default8BitClusterPreserveQuantizeScheme)):
        def get_quantize_registry(self):
            return Registry(self.preserve_sparsity)

    return Scheme(preserve_sparsity=preserve_sparsity)


def check_skip(model, skip: tuple[str, ...]) -> None:
    """Raises EdgecError when ``--qat-skip`` names a layer the model does not have."""
    names = [layer.name for layer in model.layers]
    unknown = [s for s in skip if s not in names]
    if unknown:
        shown = ", ".join(names[:40]) + (f", ... ({len(names)} layers)" if len(names) > 40 else "")
        raise EdgecError(f"--qat-skip names no layer of model '{model.name}': {', '.join(unknown)}; layers: {shown}")


def _annotation_plan(model, registry, skip: tuple[str, ...], keras) -> dict[str, str]:
    """Layers to leave unannotated, with the reason."""
    left: dict[str, str] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name in skip:
            left[layer.name] = "skipped on request (--qat-skip)"
        elif isinstance(layer, keras.layers.Lambda):
            left[layer.name] = "Lambda layers hold arbitrary code TF-MOT cannot annotate"
        elif isinstance(layer, keras.layers.BatchNormalization):
            continue  # folded into the preceding convolution by the scheme's layout transform
        elif hasattr(registry, "supports") and not registry.supports(layer):
            if not type(layer).__module__.startswith(("tf_keras", "keras", "tensorflow")):
                # a user's layer: leaving it float changes what is trained, so it is the user's call
                raise EdgecError(f"layer '{layer.name}' ({type(layer).__name__}) is a custom layer the QAT scheme "
                                 f"cannot quantize; pass --qat-skip {layer.name} to train it in float (the int8 "
                                 "converter still quantizes it after calibration), or drop --qat")
            left[layer.name] = f"{type(layer).__name__} is not supported by the QAT scheme"
    return left


def _apply(model, scheme, scheme_name: str, left: dict[str, str], keras, tfmot):
    """Annotate every layer not in ``left`` and apply the scheme; a layer TF-MOT rejects is
    moved to ``left`` and the model re-annotated."""
    custom = {type(layer).__name__: type(layer) for layer in model.layers}
    for _ in range(len(model.layers) + 1):
        def annotate(layer):
            if isinstance(layer, keras.layers.InputLayer) or layer.name in left:
                return layer
            return tfmot.quantization.keras.quantize_annotate_layer(layer)

        annotated = keras.models.clone_model(model, clone_function=annotate)
        try:
            with tfmot.quantization.keras.quantize_scope(custom), graph.rebuilding_in_memory():
                return tfmot.quantization.keras.quantize_apply(annotated, scheme)
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            text = str(exc)
            if "at least one layer" in text:
                reasons = "; ".join(f"{k}: {v}" for k, v in left.items())
                raise EdgecError(f"QAT cannot proceed: no layer of model '{model.name}' can be quantization-aware "
                                 f"trained ({reasons}); drop --qat and use post-training int8 (--calib DATA)") from exc
            culprit = _culprit(text, model, left)
            if culprit is None:
                first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
                raise EdgecError(f"QAT cannot proceed with scheme {scheme_name}: {first}; pass --qat-skip LAYER for "
                                 "the layer named there, or drop --qat") from exc
            left[culprit] = f"rejected by {scheme_name}: {text.strip().splitlines()[0][:160]}"
            log.info("QAT: leaving layer %s float (%s)", culprit, left[culprit])
    raise EdgecError("QAT cannot proceed: TF-MOT kept rejecting layers; drop --qat")  # pragma: no cover


def _culprit(text: str, model, left: dict[str, str]) -> str | None:
    names = {layer.name: layer for layer in model.layers if layer.name not in left}
    m = re.search(r"Layer ([^\s:]+):<class", text)
    if m and m.group(1) in names:
        return m.group(1)
    m = re.search(r"(<class '[^']+'>)", text)
    if m:
        for name, layer in names.items():
            if str(type(layer)) == m.group(1):
                return name
    return None


def _init_activation_ranges(qmodel, float_model, x: np.ndarray, keras) -> int:
    """Set activation ranges to the min/max each layer's output takes on ``x`` (float model).

    A symmetric quantizer (TensorRT's scheme) gets the symmetric range TF-MOT itself would
    assign, so the range keeps zero point 0 however few steps the moving average then takes.
    """
    todo: dict[str, list] = {}
    symmetric: dict[str, bool] = {}
    float_names = {layer.name for layer in float_model.layers}
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", None)
        if inner is None or inner.name not in float_names:
            continue
        rng = [v for v in layer.weights if _ACTIVATION_RANGE.search(v.name)]
        if rng:
            todo[inner.name] = rng
            symmetric[inner.name] = _symmetric_outputs(layer)
    if not todo:
        return 0
    names = sorted(todo)
    probe = keras.Model(float_model.inputs, [float_model.get_layer(n).output for n in names])
    outs = probe(x, training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for name, out in zip(names, outs, strict=True):
        out = np.asarray(out)
        lo, hi = min(float(out.min()), 0.0), max(float(out.max()), 0.0)
        if symmetric[name]:  # as TF-MOT's quant_ops do: int8 has one more negative step than positive
            ratio = -254.0 / 256.0
            lo, hi = min(lo, hi / ratio), max(hi, lo * ratio)
        if hi - lo < 1e-6:
            continue
        for var in todo[name]:
            var.assign(np.full(var.shape, lo if _ACTIVATION_RANGE.search(var.name).group(1) == "min" else hi,
                               dtype=var.dtype.as_numpy_dtype))
    return len(names)


def _symmetric_outputs(layer) -> bool:
    """True when the wrapper's activation/output quantizers are symmetric (zero point 0)."""
    config, inner = getattr(layer, "quantize_config", None), getattr(layer, "layer", None)
    if config is None or inner is None:
        return False
    try:
        found = [q for _, q in config.get_activations_and_quantizers(inner)] + list(config.get_output_quantizers(inner))
    except Exception:  # a config that cannot answer for this layer: treat it as TF-MOT's asymmetric default
        return False
    return any(getattr(q, "symmetric", False) for q in found)


def _floor_kernel_ranges(qmodel) -> list[dict[str, Any]]:
    """Give emptied (all-zero) or near-empty kernel channels a weight range of 1 % of the layer's
    median channel range, so the converter's bias scale stays representable."""
    fixed = []
    for layer in qmodel.layers:
        pairs: dict[str, dict[str, Any]] = {}
        for var in layer.weights:
            m = _KERNEL_RANGE.search(var.name)
            if m:
                pairs.setdefault(var.name[: m.start()], {})[m.group(1)] = var
        for pair in pairs.values():
            if set(pair) != {"min", "max"}:
                continue
            lo, hi = np.asarray(pair["min"].numpy()), np.asarray(pair["max"].numpy())
            half = np.maximum(np.abs(lo), np.abs(hi))
            positive = half[half > 0]
            floor = 0.01 * float(np.median(positive)) if positive.size else 1e-3
            small = half < floor
            if not small.any():
                continue
            pair["min"].assign(np.where(small, -floor, lo).astype(lo.dtype))
            pair["max"].assign(np.where(small, floor, hi).astype(hi.dtype))
            fixed.append({"layer": getattr(layer, "layer", layer).name, "channels": int(np.sum(small)),
                          "range": round(floor, 8)})
    return fixed


def qat(model, data: FineTuneData, spec: OptimizeSpec, progress: Progress, *, target_scheme,
        pruned: bool, clustered: bool) -> tuple[Any, dict[str, Any]]:
    """Quantization-aware fine-tuning of a private copy of ``model``.

    Returns:
        The QAT model (quantize wrappers kept: the converter reads its learned ranges) and what
        was done: scheme, annotated and float layers, fine-tune record.

    Raises:
        EdgecError: QAT cannot proceed (the message names the layer and the way out). The
            ``--qat-skip`` names are checked before any step runs (:func:`check_skip`).
    """
    import tensorflow_model_optimization as tfmot

    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    scheme, scheme_name, preserve = choose_scheme(target_scheme, pruned=pruned, clustered=clustered)
    base = graph.private_copy(model)
    left = _annotation_plan(base, scheme.get_quantize_registry(), spec.qat_skip, keras)
    qmodel = _apply(base, scheme, scheme_name, left, keras, tfmot)
    from edgec.calibration import take

    ranges = _init_activation_ranges(qmodel, base, take(data.x_train, slice(0, _RANGE_CALIBRATION_SAMPLES)), keras)
    # TF-MOT's collaborative schemes preserve zeros and shared values in the layers they quantize;
    # a target's own scheme does not, nor does training a layer left float: those get them put back
    wrapped = {getattr(layer, "layer", layer).name for layer in qmodel.layers
               if type(layer).__name__.startswith("QuantizeWrapper")}
    keep = [layer.name for layer in base.layers if target_scheme is not None or layer.name not in wrapped]
    keeper, kept = graph.structure_keeper(qmodel, base, keep, zeros=pruned, clusters=spec.cluster if clustered else None)
    fit = fine_tune(qmodel, data, spec, step="qat", progress=progress, callbacks=[keeper] if keeper else [])
    if target_scheme is None and clustered:
        qmodel = tfmot.experimental.combine.strip_clustering_cqat(qmodel)
    floored = _floor_kernel_ranges(qmodel)
    input_names = {layer.name for layer in base.layers if isinstance(layer, keras.layers.InputLayer)}
    annotated = [layer.name for layer in base.layers if layer.name not in left and layer.name not in input_names]
    # TF-MOT still quantizes the output of a float layer that feeds a quantized one
    output_only = sorted(name for name in wrapped if name in left)
    info = {
        "scheme": scheme_name,
        "scheme_source": "target" if target_scheme is not None else "collaborative default",
        "preserves": preserve,
        "annotated_layers": annotated,
        "float_layers": [{"layer": name, "reason": reason} for name, reason in left.items()],
        "float_layers_with_quantized_output": output_only,
        "activation_ranges_initialised": ranges,
        "kernels_kept_by_callback": kept,
        "emptied_channel_ranges": floored,
        "fine_tune": fit,
    }
    return qmodel, info

"""Magnitude pruning with TF-MOT: unstructured (polynomial or constant schedule) or 2:4 structured.

Only the layers TF-MOT knows how to prune are wrapped (Conv, Dense, ...); the rest of the model
is left as it is, so a layer TF-MOT does not know (Rescaling, Lambda, a custom layer) does not
stop the step. TF-MOT leaves DepthwiseConv2D kernels dense by design; they are listed.

A kernel that holds less than :data:`MIN_LAYER_SHARE` of the weights pruning would act on stays
dense too (listed, with its share): typically the first convolution (3x3 over 1-3 input channels),
where pruning saves a few hundred weights and costs a point or more of accuracy that fine-tuning
does not win back — the rule practitioners follow by hand ("prune the later layers, not the
first"). The sparsity target applies to the kernels that are pruned. With ``--sparse-inference``
the XNNPACK policy below decides alone.

With ``--sparse-inference`` the step follows TF-MOT's ``PruneForLatencyOnXNNPack`` policy: only
1x1 Conv2D kernels are pruned, and the model must have the shape XNNPACK's sparse subgraph takes
(a 3x3 stride-2 convolution on 3 input channels after 1-pixel zero padding, then only 1x1
convolutions, 3x3/5x5 depthwise convolutions, element-wise ops and BatchNorm up to a
GlobalAveragePooling2D with keepdims); the policy's own check names the layer that breaks it.
"""

from __future__ import annotations

import math
from typing import Any

from edgec.errors import EdgecError
from edgec.optimize import graph
from edgec.optimize.spec import OptimizeSpec, PruneSchedule
from edgec.optimize.train import FineTuneData, fine_tune
from edgec.progress import Progress

RAMP_SHARE = 0.5  # polynomial schedule: sparsity reaches its target after this share of the epochs
MIN_LAYER_SHARE = 0.01  # kernels holding less of the prunable weights than this stay dense


def _prunable(layer, keras, structured: bool) -> tuple[bool, str | None]:
    from tensorflow_model_optimization.python.core.sparsity.keras import (
        prunable_layer,
        prune_registry,
    )

    if isinstance(layer, keras.layers.InputLayer) or not layer.weights:
        return False, None
    if structured and type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
        return False, "2:4 pruning applies to Conv2D and Dense kernels"
    if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return True, None
    if not prune_registry.PruneRegistry.supports(layer):
        return False, f"TF-MOT cannot prune {type(layer).__name__} layers"
    if not prune_registry.PruneRegistry._weight_names(layer):  # noqa: SLF001 (TF-MOT's own table)
        return False, f"TF-MOT leaves {type(layer).__name__} weights unpruned"
    return True, None


def _pruned_weights(layer) -> list[str]:
    """The kernels TF-MOT prunes in ``layer`` (SeparableConv2D: the pointwise one)."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    try:
        names = prune_registry.PruneRegistry._weight_names(layer)  # noqa: SLF001 (TF-MOT's own table)
    except (KeyError, ValueError, AttributeError):
        names = None
    if not names and hasattr(layer, "get_prunable_weights"):
        names = [w.name.split("/")[-1].split(":")[0] for w in layer.get_prunable_weights()]
    return [n for n in (names or []) if n in graph.KERNEL_NAMES]


def schedule_for(spec: OptimizeSpec, steps_per_epoch: int) -> tuple[Any, int, dict[str, Any]]:
    """TF-MOT pruning schedule, the first epoch at full sparsity, and a description."""
    import tensorflow_model_optimization as tfmot

    frequency = max(1, steps_per_epoch // 4)
    if spec.prune_structure is not None:
        # masks are set once, at the first training step (TF-MOT's m_by_n); the schedule is unused
        return (tfmot.sparsity.keras.ConstantSparsity(spec.prune, begin_step=0, frequency=frequency), 0,
                {"kind": "m_by_n", "masks_set_at_step": 1})
    if spec.prune_schedule is PruneSchedule.CONSTANT:
        return (tfmot.sparsity.keras.ConstantSparsity(spec.prune, begin_step=0, frequency=frequency), 0,
                {"kind": "constant", "frequency_steps": frequency})
    epochs = spec.epochs_for("prune")
    ramp_epochs = min(epochs, max(1, math.ceil(epochs * RAMP_SHARE)))
    end_step = max(frequency, (ramp_epochs * steps_per_epoch - 1) // frequency * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=spec.prune, begin_step=0,
                                                   end_step=end_step, power=3, frequency=frequency)
    return schedule, ramp_epochs - 1, {"kind": "polynomial", "initial_sparsity": 0.0, "power": 3,
                                        "end_step": end_step, "ramp_epochs": ramp_epochs,
                                        "frequency_steps": frequency}


def prune(model, data: FineTuneData, spec: OptimizeSpec, progress: Progress) -> tuple[Any, dict[str, Any]]:
    """Prune and fine-tune a private copy of ``model``; return it stripped, with what was done."""
    import tensorflow_model_optimization as tfmot

    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    from edgec.calibration import count

    steps_per_epoch = math.ceil(count(data.x_train) / spec.batch_size)
    schedule, full_from_epoch, schedule_info = schedule_for(spec, steps_per_epoch)
    structured = spec.prune_structure is not None
    layers: list[dict[str, Any]] = []
    copy = graph.private_copy(model)
    policy = _sparse_policy(copy) if spec.sparse_inference else None
    sizes = {}
    for layer in model.layers:
        if _prunable(layer, keras, structured)[0]:
            names = _pruned_weights(layer)
            sizes[layer.name] = sum(int(var.shape.num_elements()) for kname, var in graph.kernels_of(layer)
                                    if not names or kname in names)
    total = sum(sizes.values())

    def wrap(layer):
        ok, reason = _prunable(layer, keras, structured)
        if ok and policy is not None and not policy.allow_pruning(layer):
            ok, reason = False, "XNNPACK's sparse kernels take 1x1 Conv2D only"
        if ok and policy is None and len(sizes) > 1 and 0 < sizes.get(layer.name, 0) < MIN_LAYER_SHARE * total:
            share = sizes[layer.name] / total
            ok, reason = False, (f"{sizes[layer.name]:,} weights, {share * 100:.1f} % of the prunable ones (under "
                                 f"{MIN_LAYER_SHARE * 100:g} %): left dense, pruning it saves little and costs accuracy")
        if ok:
            layers.append({"layer": layer.name, "type": type(layer).__name__, "pruned": True,
                           "kernels": _pruned_weights(layer)})
            kwargs = {"sparsity_m_by_n": spec.prune_structure} if structured else {}
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, **kwargs)
        if reason:
            layers.append({"layer": layer.name, "type": type(layer).__name__, "pruned": False, "reason": reason})
        return layer

    wrapped = keras.models.clone_model(copy, clone_function=wrap)
    if not any(entry["pruned"] for entry in layers):
        reasons = "; ".join(f"{e['layer']}: {e['reason']}" for e in layers) or "no layer has weights"
        raise EdgecError(f"model '{model.name}' has no layer TF-MOT can prune ({reasons}); drop --prune")
    fit = fine_tune(wrapped, data, spec, step="prune", progress=progress,
                    callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], select_from_epoch=full_from_epoch)
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    # the moving averages trail the weights that ended the ramp; the pruned model's own statistics
    recalibrated = graph.recalibrate_batchnorm(stripped, data.x_train)
    stats = graph.kernel_stats(stripped, {e["layer"]: e["kernels"] for e in layers if e.get("kernels")})
    for entry in layers:
        if entry["layer"] in stats:
            s = stats[entry["layer"]]
            entry.update(params=s["params"], zero_share=s["zero_share"], kernel_rows=s["kernels"])
    info = {"sparsity": spec.prune, "schedule": schedule_info, "layers": layers, "batchnorm_recalibrated": recalibrated,
            "fine_tune": fit}
    if structured:
        info["structure"] = f"{spec.prune_structure[0]}:{spec.prune_structure[1]}"
    if policy is not None:
        info["pruning_policy"] = type(policy).__name__
    return stripped, info


def _sparse_policy(model):
    """TF-MOT's XNNPACK policy, checked against ``model``.

    Raises:
        EdgecError: the model lacks the structure XNNPACK's sparse subgraph needs (the policy's
            reason, and the way out).
    """
    import tensorflow_model_optimization as tfmot

    policy = tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
    try:
        policy.ensure_model_supports_pruning(model)
    except ValueError as exc:
        raise EdgecError(f"--sparse-inference: model '{model.name}' cannot use XNNPACK's sparse inference: "
                         f"{str(exc).strip().splitlines()[0]}; drop --sparse-inference") from exc
    return policy

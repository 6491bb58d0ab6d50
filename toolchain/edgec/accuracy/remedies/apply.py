"""Applying remedies: the float model they change (cached per combination), the TFLite int8 model
with chosen activation ranges, and the 16x8 model."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgec.accuracy.remedies import Remedies
from edgec.accuracy.tflite import TFLiteBackend
from edgec.errors import EdgecError
from edgec.model_io import predict

log = logging.getLogger(__name__)

#: how far the equalized model may be from the original (relative to the output's magnitude)
EQUALIZE_TOLERANCE = 1e-3


def _sample(x, n: int = 64):
    if isinstance(x, dict):
        return {k: v[:n] for k, v in x.items()}
    return x[:n]


class KerasVariants:
    """Float models with the Keras-level remedies applied, each combination made once.

    Applied in the order equalize -> adaround -> bias correction (a correction after learned
    rounding removes what rounding error is left; AdaRound on equalized weights).
    """

    def __init__(self, model, calib_x, seed: int = 0):
        self.model, self.seed = model, seed
        self.x = calib_x if isinstance(calib_x, dict) else np.asarray(calib_x, np.float32)
        self.cache: dict[tuple[bool, bool, bool], tuple[Any, dict[str, Any]]] = {(False, False, False): (model, {})}

    def get(self, wanted: Remedies) -> tuple[Any, dict[str, Any]]:
        key = wanted.keras
        if key in self.cache:
            return self.cache[key]
        if isinstance(self.x, dict):  # several inputs: the plain model (cached) is all there is
            raise EdgecError("the weight remedies (--equalize, --bias-correct, --adaround) take models with one input")
        from edgec.accuracy.remedies import equalize as eq
        from edgec.accuracy.remedies import weights as wt

        equalize, adaround, bias = key
        if bias:
            base, reports = self.get(Remedies(equalize=equalize, adaround=adaround))
            model, rep = wt.bias_correct(base, self.x)
            name = "bias_correct"
        elif adaround:
            base, reports = self.get(Remedies(equalize=equalize))
            model, rep = wt.adaround(base, self.x, self.seed)
            name = "adaround"
        else:
            model, rep = eq.equalize(self.model, _sample(self.x))
            reports, name = {}, "equalize"
            ref = max(float(np.abs(o).max()) for o in predict(self.model, _sample(self.x)))
            if rep["max_abs_diff"] > EQUALIZE_TOLERANCE * max(ref, 1.0):
                # a bug, not bad input (exit 3): the equalized model must compute the same function
                raise RuntimeError(f"cross-layer equalization changed the float model's outputs by "
                                   f"{rep['max_abs_diff']:.3g}; build without --equalize")
        if name != "equalize":  # an intended change of the float function: how large it is
            rep["max_abs_diff"] = eq.max_abs_diff(self.model, model, _sample(self.x))
        reports = {**reports, name: rep}
        self.cache[key] = (model, reports)
        return model, reports


class RangedBackend(TFLiteBackend):
    """:class:`TFLiteBackend` whose calibrated model gets its activation ranges by ``method`` before
    anything is quantized (so every configuration, ops in float or not, uses those ranges)."""

    def __init__(self, model, calib, *, method: str | None = None, **kw):
        self._method, self._calib_x, self.range_report = method, calib.x, None
        super().__init__(model, calib, **kw)

    def build(self, float_ops):
        if self._method and self.range_report is None:
            from edgec.accuracy.remedies import ranges

            self.calibrated, self.range_report = ranges.apply(self.calibrated, self._calib_x, self._method)
        return super().build(float_ops)


def int16_model(model, calib, output_names, progress=None) -> bytes:
    """The whole model with 16-bit activations and int8 weights (float input and output).

    Raises:
        EdgecError: the converter rejected it.
    """
    from edgec.model_io import SignatureModel, named_function
    from edgec.progress import Progress
    from edgec.targets.tflite import converter_reason, representative_dataset
    from edgec.tfcompat import tf_and_keras
    from edgec.tflite_model import reorder_outputs
    from edgec.util import capture_native_stderr

    tf, _ = tf_and_keras()
    progress = progress or Progress(enabled=False)
    concrete = named_function(model, None, output_names)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete], model.loaded if isinstance(model, SignatureModel) else model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.representative_dataset = representative_dataset(calib, progress)
    with progress.task("convert: TFLite 16x8"), capture_native_stderr() as native:
        try:
            content = converter.convert()
        except Exception as exc:  # ConverterError, ValueError, RuntimeError
            error = exc
        else:
            error = None
    if error is not None:
        raise EdgecError(f"TFLite 16x8 conversion failed: {converter_reason(error, native)}") from error
    return reorder_outputs(bytes(content), output_names)


def keras_model(ctx, model=None):
    """The model a target converts with the build's weight remedies applied (the model as is
    without them); what was done goes to the manifest's ``remedies``."""
    from edgec.accuracy.remedies import Remedies, describe

    model = ctx.model if model is None else model
    wanted = Remedies.from_options(ctx.options)
    if not any(wanted.keras) or ctx.calib is None:
        return model
    changed, reports = KerasVariants(model, ctx.calib.x, ctx.options.seed).get(wanted)
    ctx.extra["remedies"] = describe(wanted, reports)
    return changed

"""A build's inputs: the model loaded (Keras 3 bridged where the compression steps need tf-keras
layers), its input preprocessing decided, the calibration, eval and fine-tune data loaded and
checked against each other, and the float model's reference outputs on the eval data. Training
and sampling are seeded with TensorFlow's op determinism on."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from edgec.errors import EdgecError
from edgec.pipeline.validate import BuildPlan
from edgec.progress import Progress

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Inputs:
    """The loaded model and data of a build, and what was decided about them."""

    loaded: Any  # model_io.LoadedModel
    preprocessing: Any  # calibration.inputs.InputPreprocessing
    calib: Any
    eval: Any
    fine_tune: Any
    reference: Any  # verify.Reference | None
    determinism: dict[str, Any]
    warnings: list[str]


def prepare_inputs(request: BuildPlan, progress: Progress) -> Inputs:
    from edgec import calibration
    from edgec.calibration import inputs as input_prep
    from edgec.model_io import SignatureModel, data_shapes, load_model
    from edgec.tfcompat import fresh_names, set_seed
    from edgec.verify import reference

    options = request.options
    determinism = set_seed(options.seed)
    fresh_names()
    with progress.task("load model"):
        from edgec.accuracy.remedies import Remedies

        # the compression steps and the weight remedies rewrite tf-keras layers (Keras 3: the bridge)
        weight_remedies = any(Remedies.from_options(options).keras)
        loaded = load_model(request.model, keras_layers=request.spec is not None or weight_remedies,
                            custom_objects=options.custom_objects)
        if loaded.keras and loaded.keras["path"] == "bridge":  # Keras 3 -> tf-keras layers, checked below
            from edgec.keras3 import bridge

            loaded = bridge.to_tf_keras(loaded)
    if request.spec is not None and isinstance(loaded.model, SignatureModel):
        raise EdgecError(f"the compression steps train Keras layers, but '{loaded.path}' is a SavedModel without "
                         "Keras metadata (its serving signature); save the model with tf-keras model.save(), or drop "
                         "--prune/--cluster/--qat")
    if weight_remedies and isinstance(loaded.model, SignatureModel):
        raise EdgecError(f"--equalize, --bias-correct and --adaround rewrite Keras layers, but '{loaded.path}' is a "
                         "SavedModel without Keras metadata (its serving signature); save the model with "
                         "model.save(), or drop them (--range and --int16-activations work on any model)")
    shape = data_shapes(loaded.model)  # {input name: shape} for several inputs
    preprocessing, warnings = input_prep.resolve(loaded.model, input_range=options.input_range,
                                                 normalize=options.normalize, mean=options.mean, std=options.std)

    def load(spec, purpose, **kw):
        with progress.task(f"load data: {purpose}"):
            return calibration.load(spec, shape, purpose=purpose, seed=options.seed, preprocess=preprocessing, **kw)

    # accuracy control measures its budget as top-1 agreement with the float model when eval has no labels
    needs_labels = options.max_accuracy_drop is not None and not options.accuracy_control
    calib = load(options.calib, "calibration", limit=options.calib_samples) if options.calib else None
    eval_data = load(options.eval, "eval", need_labels=needs_labels) if options.eval else None
    fine_tune = load(options.fine_tune, "fine-tune", need_labels=True) if request.spec is not None else None
    if loaded.keras and loaded.keras["path"] == "bridge":
        from edgec.keras3 import bridge

        bridge.check(loaded, (calib if calib is not None else fine_tune).x)
    expected = preprocessing.expected()
    for data, what in ((calib, "calibration data"), (eval_data, "eval data"), (fine_tune, "fine-tune data")):
        # the expected range is the preprocessing's, which several inputs apply to their pixel inputs only
        if data is not None and not isinstance(data.x, dict):
            line = input_prep.range_warning(data.x, expected, f"{what} '{data.source}'")
            if line:
                warnings.append(line)
    if calib is not None:
        against = eval_data if eval_data is not None else fine_tune
        if against is not None:
            from edgec.calibration import arrays

            theirs = dict(arrays(against.x))
            for name, arr in arrays(calib.x):
                where = f" input '{name}'" if name is not None else ""
                line = input_prep.mismatch_warning(arr, theirs[name], f"calibration data '{calib.source}'{where}",
                                                   f"the {'eval' if against is eval_data else 'fine-tune'} data "
                                                   f"'{against.source}'")
                if line:
                    warnings.append(line)
    ref = reference(loaded.model, eval_data, options.eval_output, progress) if eval_data is not None else None
    for line in warnings:
        log.warning("%s", line)
    return Inputs(loaded, preprocessing, calib, eval_data, fine_tune, ref, determinism, warnings)


def check_labelled(request: BuildPlan, data: Inputs) -> None:
    """Refuse an accuracy budget on labels when the model has no classification output for them."""
    # accuracy control measures its budget as top-1 agreement with the float model when eval has no labels
    options = request.options
    needs_labels = options.max_accuracy_drop is not None and not options.accuracy_control
    if needs_labels and (data.reference is None or data.reference.labelled is None):
        raise EdgecError("--max-accuracy-drop needs a classification output (batch, classes) for the --eval labels; "
                         f"model '{data.loaded.model.name}' has none")

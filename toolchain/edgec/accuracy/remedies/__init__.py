"""Integer remedies for int8 accuracy, tried before any op is left in float.

In order of cost (what a build pays for each):

1. ``equalize``: cross-layer equalization of the float model (:mod:`.equalize`), data-free,
   the same float function;
2. ``bias_correct``: empirical bias correction from the calibration data (:mod:`.weights`);
3. ``range``: per-tensor activation range, ``percentile`` or ``mse`` instead of min/max
   (:mod:`.ranges`; TFLite only);
4. ``adaround``: learned rounding of the int8 weights on the calibration data (:mod:`.weights`;
   a short optimization per layer);
5. ``int16``: 16-bit activations with int8 weights (TFLite's 16x8 kernels). The converter only
   quantizes a whole model this way (no per-layer mixing with int8), so it is offered for the whole
   model, and its latency is counted against the int8 model's. TFLite targets only: the Edge TPU
   has no 16-bit kernels, TensorRT no int16.

Each is a flag of ``edgec build`` (``--equalize``, ``--bias-correct``, ``--range``,
``--adaround``, ``--int16-activations``) and ``--accuracy-control`` tries them in this order,
keeping each that improves the metric, before falling back to float ops. Nothing here imports
TensorFlow at module level.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgec import targets
from edgec.errors import EdgecError

ORDER = ("equalize", "bias_correct", "range", "adaround", "int16")
FLAGS = {"equalize": "--equalize", "bias_correct": "--bias-correct", "range": "--range",
         "adaround": "--adaround", "int16": "--int16-activations"}
RANGE_METHODS = ("minmax", "percentile", "mse")
#: the remedies that read one input array: a model with several inputs is offered the others
ONE_INPUT = ("equalize", "bias_correct", "range", "adaround")


#: the remedies that change a tf-keras model's weights layer by layer
WEIGHTS = ("equalize", "bias_correct", "adaround")


def offered(kind: str, x, model=None) -> tuple[str, ...]:
    """The remedies target kind ``kind`` carries for calibration inputs ``x`` (a dict: several inputs)
    and ``model`` (the weight remedies need tf-keras layers: not a Keras 3 export or a signature)."""
    kinds = kind_offers(kind)
    if isinstance(x, dict):
        kinds = tuple(n for n in kinds if n not in ONE_INPUT)
    if model is not None and not has_tf_keras_layers(model):
        kinds = tuple(n for n in kinds if n not in WEIGHTS)
    return kinds


def has_tf_keras_layers(model) -> bool:
    """Whether ``model`` is a tf-keras model whose layers the weight remedies can rewrite."""
    import sys

    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(model, tf_keras.Model)


def kind_offers(kind: str) -> tuple[str, ...]:
    """The remedies a target kind's int8 artifact can carry (its Target's ``remedies``), in cost order."""
    carried = targets.target_class(kind).remedies if kind in targets.REGISTRY else ()
    return tuple(n for n in ORDER if n in carried)


@dataclasses.dataclass(frozen=True)
class Remedies:
    """Which remedies a build applies (``range``: a method, ``None`` for the converter's min/max)."""

    equalize: bool = False
    bias_correct: bool = False
    range: str | None = None
    adaround: bool = False
    int16: bool = False

    @classmethod
    def from_options(cls, options) -> Remedies:
        return cls(equalize=bool(getattr(options, "equalize", False)),
                   bias_correct=bool(getattr(options, "bias_correct", False)),
                   range=getattr(options, "act_range", None) if getattr(options, "act_range", None) != "minmax"
                   else None,
                   adaround=bool(getattr(options, "adaround", False)),
                   int16=bool(getattr(options, "int16_activations", False)))

    @property
    def any(self) -> bool:
        return bool(self.equalize or self.bias_correct or self.range or self.adaround or self.int16)

    @property
    def keras(self) -> tuple[bool, bool, bool]:
        """The part that changes the float model (what a cached model is keyed by)."""
        return (self.equalize, self.adaround, self.bias_correct)

    def names(self) -> list[str]:
        out = []
        for name in ORDER:
            value = getattr(self, name)
            if value:
                out.append(f"range={value}" if name == "range" else name)
        return out

    def label(self) -> str:
        return " + ".join(self.names()) or "plain"

    def with_(self, **kw) -> Remedies:
        return dataclasses.replace(self, **kw)


def check_request(profile, precision, options) -> None:
    """Reject remedies a build cannot apply, before TensorFlow loads.

    Raises:
        EdgecError: (exit 2) not int8, no calibration data, QAT, or a target kind that cannot carry one.
    """
    wanted = Remedies.from_options(options)
    if getattr(options, "act_range", None) not in (None, *RANGE_METHODS):
        raise EdgecError(f"--range takes one of {', '.join(RANGE_METHODS)}; got '{options.act_range}'")
    if not wanted.any:
        return
    flags = ", ".join(FLAGS[n.split("=")[0]] for n in wanted.names())
    if precision.value != "int8":
        raise EdgecError(f"{flags} improve{'s' if ',' not in flags else ''} an int8 model; this build's precision is "
                         f"{precision.value}: add --precision int8")
    if options.qat:
        raise EdgecError(f"{flags} act on post-training quantization (ranges from --calib); with --qat the weights and "
                         "ranges are learned: use one or the other")
    if not options.calib:
        raise EdgecError(f"{flags} need calibration data: add --calib DATA")
    for name in wanted.names():
        key = name.split("=")[0]
        carried = kind_offers(profile.target)
        if key not in carried:
            refused = targets.target_class(profile.target).remedies_refused
            why = refused.get(key, f"target kind {profile.target} cannot carry it")
            raise EdgecError(f"{FLAGS[key]} is not available for profile '{profile.id}' ({profile.target}): {why}; "
                             f"available there: {', '.join(FLAGS[k] for k in carried) or 'none'}")


def describe(wanted: Remedies, reports: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``remedies`` section."""
    return {"applied": wanted.names(), **reports}

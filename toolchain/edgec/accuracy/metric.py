"""The one number accuracy-aware int8 optimizes: accuracy on the labelled output, or top-1
agreement with the float model when the eval data has no labels.

Both are measured on the same float reference a build verifies against
(:func:`edgec.verify.reference`), every artifact output paired by name. Each score also carries
the SQNR (dB) of every output against the float one: the continuous measure that orders
configurations whose accuracy is the same (a few hundred samples give coarse accuracies).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.verify import Reference, classification_shaped, is_distribution, output_metrics

ACCURACY = "accuracy"
AGREEMENT = "agreement"


@dataclasses.dataclass(frozen=True)
class Score:
    """One artifact measured against the float reference.

    Attributes:
        value: accuracy or top-1 agreement in [0, 1].
        drop_points: (float value - value) x 100; the float value of agreement is 1.
        sqnr_db: SQNR of the metric's output (``inf`` when it matches the float one exactly).
        outputs: name -> SQNR (dB) of every output.
    """

    value: float
    drop_points: float
    sqnr_db: float
    outputs: dict[str, float]

    def key(self) -> tuple[float, float]:
        """Larger is better: the metric first, SQNR to order equal metrics."""
        return (self.value, self.sqnr_db)

    def to_json(self) -> dict[str, Any]:
        return {"value": round(self.value, 6), "drop_points": round(self.drop_points, 4),
                "sqnr_db": _finite(self.sqnr_db),
                "outputs": [{"name": n, "sqnr_db": _finite(s)} for n, s in self.outputs.items()]}


def _finite(x: float) -> float | None:
    return round(float(x), 3) if np.isfinite(x) else None


class Metric:
    """Accuracy on the labelled output, else top-1 agreement on the model's classification output.

    Raises:
        EdgecError: no output to take a top-1 from (the message says how to name one).
    """

    def __init__(self, ref: Reference):
        self.ref = ref
        names = [o.name for o in ref.outputs]
        if ref.labelled is not None:
            index = ref.labelled
        else:
            shaped = [i for i, o in enumerate(ref.outputs) if classification_shaped(o.shape)]
            dists = [i for i in shaped if is_distribution(ref.values[i])]
            pick = dists if len(dists) == 1 else shaped
            if len(pick) != 1:
                why = "none is" if not pick else f"{len(pick)} are ({', '.join(names[i] for i in pick)})"
                raise EdgecError(f"accuracy control measures top-1 agreement on one classification output, but of "
                                 f"the model's outputs ({', '.join(names)}) {why} (batch, classes); name it with "
                                 "--eval-output NAME")
            index = pick[0]
        self.index = index
        self.output = names[index]
        self.kind = ACCURACY if ref.data.y is not None and ref.labelled is not None else AGREEMENT
        self.float_value = float(ref.float_accuracy) if self.kind == ACCURACY else 1.0
        self._float_top1 = ref.values[index].reshape(len(ref.data), -1).argmax(-1)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "output": self.output, "float_value": round(self.float_value, 6),
                "labelled": self.kind == ACCURACY, "samples": len(self.ref.data), "data": self.ref.data.source}

    def title(self) -> str:
        """What is measured, for printouts."""
        where = f" of output '{self.output}'" if len(self.ref.outputs) > 1 else ""
        if self.kind == ACCURACY:
            return f"accuracy{where} on {len(self.ref.data)} labelled samples of {self.ref.data.source}"
        return (f"top-1 agreement{where} with the float model on {len(self.ref.data)} samples of "
                f"{self.ref.data.source} (no labels)")

    def score(self, outs: list[np.ndarray], names: list[str]) -> Score:
        """Measure artifact outputs (in the artifact's order, named ``names``).

        Raises:
            EdgecError: the artifact lacks an output of the model.
        """
        by_name = dict(zip(names, outs, strict=True))
        missing = [o.name for o in self.ref.outputs if o.name not in by_name]
        if missing:
            raise EdgecError(f"the artifact's outputs ({', '.join(names)}) lack the model's {', '.join(missing)}")
        sqnr = {}
        for spec, ref in zip(self.ref.outputs, self.ref.values, strict=True):
            value = output_metrics(ref, by_name[spec.name], top1=False)["sqnr_db"]
            sqnr[spec.name] = float("inf") if value is None else float(value)
        got = by_name[self.output].reshape(len(self.ref.data), -1).argmax(-1)
        if self.kind == ACCURACY:
            value = float((got == self.ref.data.y).mean())
        else:
            value = float((got == self._float_top1).mean())
        return Score(value=value, drop_points=round((self.float_value - value) * 100.0, 4),
                     sqnr_db=sqnr[self.output], outputs=sqnr)

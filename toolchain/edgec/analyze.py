"""``edgec analyze``: the per-op int8 analysis of a model for a device profile, a use case beside
the build (:mod:`edgec.pipeline`), whose loading of the model and data it shares. The analysis
itself (backends, metric, sensitivity) is :mod:`edgec.accuracy`'s."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError


def analyze(model, target: str, *, calib, eval=None, calib_samples: int = 200, seed: int = 0,  # noqa: A002, PLR0913
            eval_output: str | None = None, input_range: str | None = None, normalize: str | None = None,
            mean=None, std=None, stats: bool = True, progress=None, custom_objects=(),
            remedies: bool = True) -> dict[str, Any]:
    """Per-op int8 analysis of ``model`` for a device profile (what ``edgec analyze`` prints).

    The keyword arguments are ``edgec analyze``'s options, one each, as in :func:`edgec.build`.

    The model and data are loaded as ``edgec build`` loads them (input ranges and normalization
    included). The metric is measured on ``eval`` (without labels: top-1 agreement with the float
    model), else on the calibration data itself (agreement). With ``remedies``, each integer remedy
    the target kind can carry (:mod:`edgec.accuracy.remedies`) is also measured alone, in order of
    cost (TFLite and Edge TPU: on the TFLite int8 model).

    Returns:
        :func:`edgec.accuracy.search.analyze`'s dict, plus ``profile``, ``model``, ``data``,
        ``input``, ``warnings`` and ``notes``.

    Raises:
        EdgecError: bad input (exit 2).
    """
    from edgec import pipeline, profiles
    from edgec.accuracy import ANALYZED_KINDS, backend_for
    from edgec.accuracy.metric import Metric
    from edgec.accuracy.search import analyze as analyze_ops
    from edgec.progress import Progress
    from edgec.verify import reference

    progress = progress or Progress(enabled=False)
    profile = profiles.get(target)
    if not profile.supports("int8"):
        raise EdgecError(f"profile '{profile.id}' ({profile.device}) runs no int8, so there is no int8 model to "
                         f"analyze; its precisions: {', '.join(profile.precisions)}")
    request = pipeline.plan(model, target, precision="int8", calib=calib, eval=eval, calib_samples=calib_samples,
                            seed=seed, eval_output=eval_output, input_range=input_range, normalize=normalize,
                            mean=mean, std=std, out=Path(tempfile.gettempdir()), custom_objects=custom_objects)
    profile = request.profile
    if profile.target not in ANALYZED_KINDS:
        raise EdgecError(f"edgec analyze covers target kinds {', '.join(ANALYZED_KINDS)}; profile '{profile.id}' is a "
                         f"{profile.target} target")
    with progress:
        data = pipeline.prepare_inputs(request, progress)  # the build's own loading
        ref = data.reference or reference(data.loaded.model, data.calib, eval_output, progress)
        metric = Metric(ref)
        threads = min(profile.threads or os.cpu_count() or 1, os.cpu_count() or 1)
        backend = backend_for(profile, data.loaded.model, data.calib, progress=progress, threads=threads)
        result = analyze_ops(backend, metric, ref.data.x, stats=stats, progress=progress)
        if remedies and request.target.remedies_analyzed:
            from edgec.accuracy.remedies.control import each_alone

            with progress.task("analyze: integer remedies, each alone"):
                result["remedies"] = each_alone(data.loaded.model, data.calib, metric, profile,
                                                [o.name for o in ref.outputs], seed)
    notes = []
    if data.eval is None:
        notes.append(f"no --eval data: measured on the calibration data '{data.calib.source}', which also set the "
                     "int8 ranges (top-1 agreement with the float model)")
    elif not metric.describe()["labelled"]:
        notes.append("the eval data has no labels: the metric is top-1 agreement with the float model")
    notes += request.target.analysis_notes(profile, remedies)
    return {"profile": profile.id, "device": profile.device, **result, "model": data.loaded.describe(),
            "data": {"calib": data.calib.describe(), "eval": data.eval.describe() if data.eval else None},
            "input": data.preprocessing.describe(), "warnings": data.warnings, "notes": notes}

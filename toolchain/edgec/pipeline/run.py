"""``edgec build`` as a function: check every target first, lock each output directory, then build
the targets in one :class:`~edgec.pipeline.session.BuildSession`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgec.pipeline.session import BuildResult, BuildSession
from edgec.pipeline.validate import plan, plan_targets
from edgec.progress import Progress
from edgec.util import output_locks


def build(model: Any, target: str | Sequence[str], *, progress: Progress | None = None,
          **kwargs: Any) -> BuildResult | list[BuildResult]:
    """Build, verify and record the artifacts of ``model`` for one device profile, or for several.

    Several targets share the work that does not depend on the target: the model is loaded and its
    float reference computed once, and each compression fine-tune runs once per QAT scheme (the
    TFLite and Edge TPU targets share TF-MOT's default scheme). Each target writes ``OUT/PROFILE``
    with the same bytes as a build for that target alone.

    Args:
        model: path to .keras/.h5/SavedModel, or a tf-keras model.
        target: profile id (``edgec targets`` lists them) or a profile .toml path; or a list of them.
        progress: progress display; none by default.
        **kwargs: fields of :class:`edgec.config.BuildOptions`.

    Returns:
        The build directory and its manifest (check ``passed`` for the budget checks); a list of
        them, in the order of the targets, when ``target`` is a list.

    Raises:
        EdgecError: bad input (exit code 2); nothing is written in that case.
    """
    single = isinstance(target, (str, Path))
    requests = [plan(model, str(target), **kwargs)] if single else plan_targets(model, list(target), **kwargs)
    session = BuildSession(progress)
    # each OUT/PROFILE is locked before the heavy work: a second build into it waits, saying so
    with output_locks(Path(r.options.out) / r.profile.id for r in requests), session.progress:
        results = [session.run(request) for request in requests]
    return results[0] if single else results

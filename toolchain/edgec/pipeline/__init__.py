"""``edgec build``: load -> (optimize) -> target build -> verify -> manifest, atomically.

Cheap checks (profile, precision, paths, out dir) run before TensorFlow is imported, so bad
input fails in well under a second. Training and sampling are seeded with TensorFlow's op
determinism on, so the same model, data, options and seed give the same artifact bytes.

The stages that do not depend on the target (loading the model and data, the float reference,
the compression fine-tune per QAT scheme) are kept by a :class:`BuildSession`, so a build for
several targets (``edgec build --target A --target B``, ``edgec ci``) runs them once; each target
then builds, verifies, checks and writes its manifest as a build for it alone would.

The modules, by role: :mod:`~edgec.pipeline.validate` (the request checked before TensorFlow
loads: :func:`plan`), :mod:`~edgec.pipeline.inputs` (the model and data loaded, the float
reference), :mod:`~edgec.pipeline.checks` (the artifact records and the manifest's checks),
:mod:`~edgec.pipeline.session` (the shared stages and one target's build),
:mod:`~edgec.pipeline.run` (:func:`build`).
"""

from edgec.pipeline.checks import build_checks, record_artifact
from edgec.pipeline.inputs import Inputs, check_labelled, prepare_inputs
from edgec.pipeline.run import build
from edgec.pipeline.session import BuildResult, BuildSession
from edgec.pipeline.validate import BuildPlan, parse_precision, plan, plan_targets

__all__ = ["BuildPlan", "BuildResult", "BuildSession", "Inputs", "build", "build_checks", "check_labelled",
           "parse_precision", "plan", "plan_targets", "prepare_inputs", "record_artifact"]

"""Edge TPU target (Coral): one module per role.

* :mod:`.rules`: the op table and the per-op limit checks, the profile's Edge TPU settings;
* :mod:`.analysis`: the op-by-op map read from the .tflite;
* :mod:`.compiler_log`: edgetpu_compiler's output, parsed;
* :mod:`.compiler`: running the compiler where it can run;
* :mod:`.target`: the :class:`~.target.EdgeTPUTarget` a build uses.

Importing this package imports none of TensorFlow.
"""

from edgec.targets.edgetpu.analysis import analyze, summary_lines
from edgec.targets.edgetpu.compiler import (
           compile_model,
           compiler_command,
           find_compiler,
           unavailable_reason,
)
from edgec.targets.edgetpu.compiler_log import (
           compare_with_analysis,
           compiler_totals,
           parse_compiler_output,
)
from edgec.targets.edgetpu.rules import EdgeTPUSettings, rules
from edgec.targets.edgetpu.target import INT8_MODEL, REPORT_FILE, EdgeTPUTarget

__all__ = ["INT8_MODEL", "REPORT_FILE", "EdgeTPUSettings", "EdgeTPUTarget", "analyze", "compare_with_analysis",
           "compile_model", "compiler_command", "compiler_totals", "find_compiler", "parse_compiler_output", "rules",
           "summary_lines", "unavailable_reason"]

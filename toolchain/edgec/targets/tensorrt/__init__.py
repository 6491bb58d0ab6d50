"""TensorRT target (Jetson): ONNX with explicit symmetric Q/DQ, engine built where it runs. One module per role:

* :mod:`.export`: tf2onnx export and TensorRT's ONNX parser checks;
* :mod:`.onnx_io`: graph I/O and ONNX Runtime runs on the host;
* :mod:`.quantize`: symmetric int8 Q/DQ (PTQ, or QAT ranges) and its report;
* :mod:`.qat`: the TF-MOT scheme QAT uses for TensorRT, and reading a QAT model back out;
* :mod:`.engine`: the deferred-build document, engine builds and engine runs;
* :mod:`.inspect`: ``edgec inspect model.onnx``;
* :mod:`.target`: the :class:`~.target.TensorRTTarget` a build uses.

Importing this package imports none of TensorFlow, onnx or onnxruntime.
"""

from edgec.targets.tensorrt.engine import BUILD_SPEC, build_spec, engine_available, trtexec_command
from edgec.targets.tensorrt.target import TensorRTTarget

__all__ = ["BUILD_SPEC", "TensorRTTarget", "build_spec", "engine_available", "trtexec_command"]

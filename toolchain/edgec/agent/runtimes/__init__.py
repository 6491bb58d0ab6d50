"""Runtime adapters, each imported only when used.

=============  ====================================================  =====================
name           runs                                                  Python module
=============  ====================================================  =====================
litert         .tflite with ai_edge_litert, else tflite_runtime      ai_edge_litert / tflite_runtime
tflite         .tflite with tflite_runtime only                      tflite_runtime
edgetpu        Edge TPU .tflite through libedgetpu.so.1 (pycoral     tflite_runtime / ai_edge_litert
               when present)
onnxruntime    .onnx                                                 onnxruntime
tensorrt       serialized engine (.engine/.plan), or an edgec        tensorrt (+ libcudart via ctypes)
               TensorRT bundle (build.json + model.onnx) built into
               an engine on first run and cached
=============  ====================================================  =====================
"""

import importlib
import os

from ..errors import AgentError
from ..vocab import RUNTIMES

_ADAPTERS = {
    "litert": ("tflite", "TFLiteRuntime"),
    "tflite": ("tflite", "TFLiteRuntime"),
    "edgetpu": ("tflite", "EdgeTPURuntime"),
    "onnxruntime": ("onnxrt", "OnnxRuntime"),
    "tensorrt": ("tensorrt", "TensorRTRuntime"),
}
FORMATS = {"tflite": ("litert", "tflite", "edgetpu"), "onnx": ("onnxruntime",),
           "engine": ("tensorrt",), "tensorrt-bundle": ("tensorrt",)}
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"


def artifact_format(path):
    """The artifact's format from its name: tflite, onnx, engine or tensorrt-bundle.

    Raises:
        AgentError: unknown file type or a directory without build.json.
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "build.json")):
            return "tensorrt-bundle"
        raise AgentError("'%s' is a directory without build.json; expected a .tflite, .onnx, .engine/.plan "
                         "file or an edgec TensorRT bundle directory" % path)
    name = os.path.basename(path).lower()
    if name == "build.json":
        return "tensorrt-bundle"
    ext = os.path.splitext(name)[1]
    if ext == ".tflite":
        return "tflite"
    if ext == ".onnx":
        return "onnx"
    if ext in (".engine", ".plan", ".trt"):
        return "engine"
    raise AgentError("unknown artifact type '%s'; expected .tflite, .onnx, .engine/.plan or build.json" % path)


def is_edgetpu_model(path):
    """True when the .tflite holds an Edge TPU custom op (compiled by edgetpu_compiler)."""
    with open(path, "rb") as fh:
        return EDGETPU_CUSTOM_OP in fh.read()


def choose(runtime, path, fmt):
    """Resolve ``auto`` and check that ``runtime`` can run ``fmt``."""
    if runtime == "auto":
        if fmt == "tflite":
            return "edgetpu" if is_edgetpu_model(path) else "litert"
        return FORMATS[fmt][0]
    if runtime not in RUNTIMES:
        raise AgentError("unknown runtime '%s'; valid: auto, %s" % (runtime, ", ".join(RUNTIMES)))
    if runtime not in FORMATS[fmt]:
        raise AgentError("runtime '%s' cannot run a %s artifact; use one of: %s"
                         % (runtime, fmt, ", ".join(FORMATS[fmt])))
    return runtime


def create(runtime, path, **options):
    """An unloaded adapter instance for ``runtime`` (its runtime is imported by ``load()``)."""
    module_name, class_name = _ADAPTERS[runtime]
    module = importlib.import_module("." + module_name, __name__)
    return getattr(module, class_name)(path, variant=runtime, **options)

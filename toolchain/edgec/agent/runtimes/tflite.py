"""TFLite models on LiteRT (``ai_edge_litert``) or ``tflite_runtime``, and on the Edge TPU.

``litert`` uses whichever interpreter module the device has (``ai_edge_litert`` first);
``tflite`` insists on ``tflite_runtime``. ``edgetpu`` loads Coral's ``libedgetpu.so.1`` as a
delegate (through ``pycoral`` when it is installed).
"""

import ctypes
import importlib
import platform

from ..errors import AgentError, Unavailable
from .base import Runtime, module_version

INTERPRETER_MODULES = {"litert": ("ai_edge_litert", "tflite_runtime"), "tflite": ("tflite_runtime",),
                       "edgetpu": ("tflite_runtime", "ai_edge_litert")}
DISTRIBUTIONS = {"ai_edge_litert": ("ai-edge-litert",), "tflite_runtime": ("tflite-runtime", "tflite_runtime")}
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


def import_interpreter(candidates):
    """The first importable ``<module>.interpreter`` of ``candidates``.

    Raises:
        Unavailable: none can be imported; says which and how to install one.
    """
    errors = []
    for name in candidates:
        try:
            return importlib.import_module(name + ".interpreter"), name
        except ImportError as exc:
            errors.append("%s: %s" % (name, exc))
    raise Unavailable(
        "LiteRT absent: cannot import %s (%s); install it on the device with 'pip3 install ai-edge-litert' "
        "(Python >= 3.9) or 'pip3 install tflite-runtime' (older Pythons)"
        % (" or ".join(candidates), "; ".join(errors)))


class TFLiteRuntime(Runtime):
    """A .tflite in the LiteRT / tflite_runtime interpreter (XNNPACK on CPUs)."""

    name = "litert"

    def load(self):
        module, self.module = import_interpreter(INTERPRETER_MODULES[self.variant])
        top = importlib.import_module(self.module)
        self.version = module_version(top, *DISTRIBUTIONS.get(self.module, ()))
        self.interpreter = self._interpreter(module, self._delegates(module))
        self._prepare()

    def _delegates(self, module):
        return []

    def _interpreter(self, module, delegates):
        kwargs = {"model_path": self.path}
        if self.threads:
            kwargs["num_threads"] = int(self.threads)
        if delegates:
            kwargs["experimental_delegates"] = delegates
        try:
            return module.Interpreter(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise AgentError("%s cannot load '%s': %s" % (self.module, self.path, exc)) from exc

    def _prepare(self):
        it = self.interpreter
        details = it.get_input_details()
        for d in details:
            sig = d.get("shape_signature")
            dynamic_batch = sig is not None and len(sig) > 0 and int(sig[0]) == -1
            if self.batch != int(d["shape"][0]):
                if not dynamic_batch:
                    raise AgentError("input '%s' has a fixed batch of %d; --batch %d needs a model with a "
                                     "dynamic batch dimension" % (d["name"], int(d["shape"][0]), self.batch))
                it.resize_tensor_input(d["index"], [self.batch] + [int(x) for x in d["shape"][1:]])
        it.allocate_tensors()
        self._inputs = it.get_input_details()
        self.invoke = it.invoke
        self.details = {"inputs": len(self._inputs), "outputs": len(it.get_output_details())}

    def input_specs(self):
        specs = []
        for d in self._inputs:
            scale, zero = d.get("quantization", (0.0, 0))
            specs.append({"name": d["name"], "dtype": d["dtype"].__name__ if hasattr(d["dtype"], "__name__")
                          else str(d["dtype"]), "shape": [int(x) for x in d["shape"]],
                          "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None})
        return specs

    def set_inputs(self, arrays):
        for d, arr in zip(self._inputs, arrays):
            self.interpreter.set_tensor(d["index"], arr)


class EdgeTPURuntime(TFLiteRuntime):
    """An Edge TPU-compiled .tflite, its custom op run by ``libedgetpu.so.1``."""

    name = "edgetpu"

    def load(self):
        library = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
        try:
            ctypes.CDLL(library)
        except OSError as exc:
            raise Unavailable("Edge TPU runtime absent: cannot load %s (%s); install Coral's libedgetpu1-std "
                              "(https://coral.ai/software/#edgetpu-runtime) and connect the Edge TPU" % (library, exc)) from exc
        self.delegate = library
        try:
            from pycoral.utils import edgetpu  # Coral's own package, from Coral's index
        except ImportError:
            edgetpu = None
        if edgetpu is not None:
            tpus = edgetpu.list_edge_tpus()
            if not tpus:
                raise Unavailable("Edge TPU absent: libedgetpu loads but pycoral lists no Edge TPU "
                                  "(is the USB accelerator plugged in / /dev/apex_0 present?)")
            self.module = "pycoral"
            self.version = edgetpu.get_runtime_version()
            kwargs = {"device": self.options.get("edgetpu_device")} if self.options.get("edgetpu_device") else {}
            self.interpreter = edgetpu.make_interpreter(self.path, **kwargs)
            self._prepare()
            self.details["edge_tpus"] = [dict(t) for t in tpus]
            return
        super().load()

    def _delegates(self, module):
        options = {}
        if self.options.get("edgetpu_device"):
            options["device"] = self.options["edgetpu_device"]
        try:
            return [module.load_delegate(self.delegate, options)]
        except (ValueError, OSError, RuntimeError) as exc:
            raise Unavailable("Edge TPU absent: %s loads but no Edge TPU answered (%s); check the USB "
                              "connection or /dev/apex_0" % (self.delegate, exc)) from exc

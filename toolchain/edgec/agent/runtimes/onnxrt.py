"""ONNX models on ONNX Runtime (CPU, or CUDA when onnxruntime-gpu is installed)."""

import functools

from ..errors import AgentError, Unavailable
from .base import Runtime, module_version

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
             "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}
# Used only when asked for by name: TensorRT's EP builds an engine inside ORT (minutes), Azure's
# runs the model on a remote endpoint.
SKIP_BY_DEFAULT = ("TensorrtExecutionProvider", "AzureExecutionProvider")


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def load(self):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Unavailable("ONNX Runtime absent: cannot import onnxruntime (%s); install it on the device "
                              "with 'pip3 install onnxruntime' (or onnxruntime-gpu)" % exc) from exc
        self.module = "onnxruntime"
        self.version = module_version(ort, "onnxruntime", "onnxruntime-gpu")
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = self.options.get("providers") or [
            p for p in ort.get_available_providers() if p not in SKIP_BY_DEFAULT]
        try:
            self.session = ort.InferenceSession(self.path, sess_options=so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise AgentError("onnxruntime cannot load '%s': %s" % (self.path, exc)) from exc
        self.delegate = self.session.get_providers()[0]
        self.details = {"providers": self.session.get_providers()}
        self._specs = []
        for i in self.session.get_inputs():
            dtype = ORT_TYPES.get(i.type)
            if dtype is None:
                raise AgentError("input '%s' has type %s, which the agent cannot generate" % (i.name, i.type))
            shape = []
            for axis, dim in enumerate(i.shape):
                if isinstance(dim, int) and dim > 0:
                    shape.append(dim)
                elif axis == 0:
                    shape.append(int(self.batch))
                else:
                    raise AgentError("input '%s' has a dynamic dimension %r at axis %d; only the batch axis "
                                     "may be dynamic" % (i.name, dim, axis))
            if axis_fixed_batch(i.shape) and shape[0] != self.batch:
                raise AgentError("input '%s' has a fixed batch of %d; --batch %d needs a dynamic batch"
                                 % (i.name, shape[0], self.batch))
            self._specs.append({"name": i.name, "dtype": dtype, "shape": shape, "quantization": None})

    def input_specs(self):
        return self._specs

    def set_inputs(self, arrays):
        feed = dict((s["name"], a) for s, a in zip(self._specs, arrays))
        self.invoke = functools.partial(self.session.run, None, feed)


def axis_fixed_batch(shape):
    return bool(shape) and isinstance(shape[0], int) and shape[0] > 0

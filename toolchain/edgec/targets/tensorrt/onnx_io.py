"""ONNX on the host: optional-package imports, graph I/O, and ONNX Runtime runs (whole models and
every intermediate tensor).

Everything heavy (onnx, onnxruntime) is imported inside the functions that use it;
``pip install 'edgec[onnx]'`` brings the packages.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edgec.errors import MissingExtra

#: ONNX Runtime session option: on x86 CPUs without VNNI, ORT's U8S8 int8 GEMM kernels sum pairs of
#: u8*s8 products in int16 (vpmaddubsw) and saturate. Symmetric int8 activations are shifted to
#: uint8 with zero point 128, so ReLU outputs sit at 128..255 and saturate often. "1" selects the
#: exact U8U8 kernels. TensorRT accumulates in int32 and never saturates this way.
ORT_EXACT_INT8 = {"session.x64quantprecision": "1"}


def require(module: str, package: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(package, "onnx", purpose) from exc


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence tf2onnx / ORT quantization INFO chatter and native stderr while they run."""
    from edgec.util import capture_native_stderr

    names = ("tf2onnx", "onnxruntime", "root")
    saved = {n: logging.getLogger(n if n != "root" else None).level for n in names}
    for n in names:
        logging.getLogger(n if n != "root" else None).setLevel(logging.ERROR)
    try:
        with capture_native_stderr():
            yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n if n != "root" else None).setLevel(lvl)



def opset_of(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


# --------------------------------------------------------------------------- ONNX Runtime


class OrtRunner:
    """Run an .onnx model on float inputs with ONNX Runtime's CPU provider; float outputs.

    A model with several inputs takes a dict keyed by the graph's input names (the model's own,
    as the export names them). Int8 kernels run in their exact mode (see :data:`ORT_EXACT_INT8`).
    """

    def __init__(self, model: Path | bytes, threads: int | None = None):
        ort = require("onnxruntime", "onnxruntime", "ONNX verification")
        so = ort.SessionOptions()
        for key, value in ORT_EXACT_INT8.items():
            so.add_session_config_entry(key, value)
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
        self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        #: the model's output names, in its output order (what ``__call__`` returns)
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = self.input.shape
        self.dynamic_batch = not isinstance(shape[0], int)

    def feed(self, x) -> dict[str, np.ndarray]:
        """``x`` (one array, or a dict keyed by input name) as ONNX Runtime's input feed."""
        from edgec.errors import EdgecError

        if not isinstance(x, dict):
            if len(self.input_names) != 1:
                raise EdgecError(f"the ONNX model has {len(self.input_names)} inputs "
                                 f"({', '.join(self.input_names)}); feed a dict keyed by those names")
            return {self.input.name: np.asarray(x, dtype=np.float32)}
        if sorted(x) != sorted(self.input_names):
            raise EdgecError(f"the ONNX model's inputs are {', '.join(self.input_names)}; got {', '.join(x)}")
        return {n: np.asarray(a, dtype=np.float32) for n, a in x.items()}

    def __call__(self, x) -> list[np.ndarray]:
        feed = self.feed(x)
        if self.dynamic_batch:
            return [np.asarray(o, dtype=np.float32) for o in self.session.run(None, feed)]
        n = len(next(iter(feed.values())))
        outs = [self.session.run(None, {k: v[i:i + 1] for k, v in feed.items()}) for i in range(n)]
        return [np.concatenate([np.asarray(o[k], dtype=np.float32) for o in outs]) for k in range(len(outs[0]))]


def io_spec(model, batch: int | None = 1) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of a graph: name, shape (dynamic dims -> ``batch`` on axis 0), dtype."""
    onnx = require("onnx", "onnx", "ONNX inspection")
    inits = {i.name for i in model.graph.initializer}

    def describe(values):
        out = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            dims = []
            for i, d in enumerate(t.shape.dim):
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                else:
                    dims.append(batch if i == 0 else -1)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            out.append({"name": v.name, "shape": dims, "dtype": dtype})
        return out

    return describe(model.graph.input), describe(model.graph.output)


# --------------------------------------------------------------------------- intermediate tensors


def float_tensors(model) -> list[str]:
    """Names of every float32 tensor a node produces (from ONNX shape inference)."""
    onnx = require("onnx", "onnx", "ONNX inspection")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return [o for n in model.graph.node for o in n.output if types.get(o) == onnx.TensorProto.FLOAT]


def run_all_tensors(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` on ``x`` and return every float intermediate tensor by name."""
    onnx = require("onnx", "onnx", "ONNX inspection")
    ort = require("onnxruntime", "onnxruntime", "ONNX inspection")
    names = float_tensors(model)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if isinstance(x, dict):
        feed = {n: np.asarray(x[n], np.float32) for n in graph_inputs}
    else:
        feed = {graph_inputs[0]: np.asarray(x, np.float32)}
    values = sess.run(None, feed)
    return dict(zip(names, values, strict=True))


def match_tensors(reference: dict[str, np.ndarray], onnx_values: dict[str, np.ndarray],
                  rtol: float = 1e-4) -> dict[str, list[str]]:
    """Map each reference tensor (e.g. a Keras layer output) to the ONNX tensors holding the same values.

    Values are compared sorted, so NHWC vs NCHW layouts and transposes match.
    """
    sorted_onnx = {n: np.sort(v.ravel()) for n, v in onnx_values.items()}
    out: dict[str, list[str]] = {}
    for key, ref in reference.items():
        flat = np.sort(np.asarray(ref, np.float32).ravel())
        tol = rtol * max(1.0, float(np.abs(flat).max(initial=0.0)))
        out[key] = [n for n, v in sorted_onnx.items()
                    if v.size == flat.size and np.allclose(v, flat, rtol=0, atol=tol)]
    return out



def keras_vs_onnx(predict: Callable[[np.ndarray], list[np.ndarray]], names: list[str], runner, x: np.ndarray) -> float:
    """Max abs difference between a model's outputs (``predict``, named ``names``) and an ONNX
    runner's, on ``x``, each output paired by name."""
    ref, got = predict(x), runner(x)
    by_name = dict(zip(runner.output_names, got, strict=True))
    return float(max(np.abs(r.astype(np.float64) - by_name[n].reshape(r.shape)).max() for r, n in zip(ref, names, strict=True)))

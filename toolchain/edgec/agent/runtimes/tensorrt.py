"""TensorRT: a serialized engine, or an edgec TensorRT bundle built into an engine on first run.

A bundle is what ``edgec build --target jetson-*`` writes when it cannot build the engine on the
host: ``build.json`` (format ``edgec-tensorrt-build``, version 1) beside ``model.onnx`` and,
when it was built on a matching host, ``model.engine``. Engines are tied to the TensorRT version
and the GPU, so the agent builds one here the first time and caches it under a key made of the
TensorRT version, the GPU (name and compute capability), the precision and the ONNX file's
sha256 (plus the DLA core and the batch size, which also change the engine).

The bundle reading and the cache key are plain Python and tested on their own; the engine
build and the inference need ``tensorrt`` and a CUDA GPU.
"""

import hashlib
import json
import os
import tempfile
import time

from ..errors import AgentError, Unavailable
from ..fs import sha256_file
from .base import Runtime

BUNDLE_FORMAT = "edgec-tensorrt-build"
BUNDLE_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
REQUIRED = ("onnx", "onnx_sha256", "precision", "inputs")


def read_bundle(path):
    """Read and check an edgec TensorRT bundle (a directory or its build.json).

    Returns:
        build.json's fields plus ``dir``, ``onnx_path`` and ``engine_path`` (None when absent).

    Raises:
        AgentError: not a bundle, a newer bundle version, a bad field, or an ONNX file whose
            sha256 differs from ``onnx_sha256``.
    """
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    build_json = os.path.join(directory, "build.json")
    try:
        with open(build_json) as fh:
            spec = json.load(fh)
    except OSError as exc:
        raise AgentError("cannot read %s: %s" % (build_json, exc)) from exc
    except ValueError as exc:
        raise AgentError("%s is not valid JSON: %s" % (build_json, exc)) from exc
    if not isinstance(spec, dict) or spec.get("format") != BUNDLE_FORMAT:
        raise AgentError("%s is not an edgec TensorRT bundle: format %r, expected %r"
                         % (build_json, spec.get("format") if isinstance(spec, dict) else None, BUNDLE_FORMAT))
    version = spec.get("version")
    if version != BUNDLE_VERSION:
        raise AgentError("%s has bundle version %r; this agent reads version %d%s"
                         % (build_json, version, BUNDLE_VERSION,
                            " (update the agent)" if isinstance(version, int) and version > BUNDLE_VERSION else ""))
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise AgentError("%s lacks %s" % (build_json, ", ".join(missing)))
    if spec["precision"] not in PRECISIONS:
        raise AgentError("%s: precision %r; expected one of %s" % (build_json, spec["precision"], ", ".join(PRECISIONS)))
    onnx_name = spec["onnx"]
    if os.path.basename(onnx_name) != onnx_name:
        raise AgentError("%s: onnx %r must be a file name inside the bundle" % (build_json, onnx_name))
    onnx_path = os.path.join(directory, onnx_name)
    if not os.path.isfile(onnx_path):
        raise AgentError("bundle %s names %s, which is missing; copy the whole bundle directory" % (directory, onnx_name))
    actual = sha256_file(onnx_path)
    if actual != spec["onnx_sha256"]:
        raise AgentError("%s has sha256 %s but build.json expects %s: the bundle is incomplete or was "
                         "modified; copy it again" % (onnx_path, actual[:16], str(spec["onnx_sha256"])[:16]))
    out = dict(spec)
    engine = os.path.join(directory, "model.engine")
    out.update(dir=directory, build_json=build_json, onnx_path=onnx_path,
               engine_path=engine if os.path.isfile(engine) else None)
    return out


def parse_version(text):
    """"8.2.1.8" -> (8, 2, 1, 8); stops at the first non-numeric part."""
    parts = []
    for piece in str(text).split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_min_version(installed, minimum):
    """Raises Unavailable when TensorRT ``installed`` is older than the bundle's ``minimum``."""
    if minimum and parse_version(installed) < parse_version(minimum):
        raise Unavailable("TensorRT %s is older than this bundle's min_tensorrt %s; update JetPack/TensorRT "
                          "or build for this device's profile" % (installed, minimum))


def cache_key(tensorrt_version, gpu, compute_capability, precision, onnx_sha256, dla_core=None, batch=None):
    """(key, parts): the engine cache key and what it is made of."""
    parts = {"tensorrt": str(tensorrt_version), "gpu": str(gpu), "compute_capability": str(compute_capability),
             "precision": precision, "onnx_sha256": onnx_sha256, "dla_core": dla_core, "batch": batch}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()
    return key, parts


def cache_dir():
    """``$EDGEC_AGENT_CACHE/tensorrt``, else ``$XDG_CACHE_HOME/edgec-agent/tensorrt`` (~/.cache)."""
    base = os.environ.get("EDGEC_AGENT_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "edgec-agent")
    return os.path.join(base, "tensorrt")


def cache_path(key, parts):
    cc = str(parts["compute_capability"]).replace(".", "")
    name = "%s-%s-trt%s-sm%s-%s.engine" % (parts["onnx_sha256"][:12], parts["precision"], parts["tensorrt"], cc, key[:12])
    return os.path.join(cache_dir(), name)


def store_engine(path, data, parts):
    """Write the engine and a .json of its key parts atomically (no half-written cache entry)."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory)
    for target, payload in ((path, data), (path[:-len(".engine")] + ".json",
                                           json.dumps(parts, indent=2, sort_keys=True).encode("utf-8"))):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise Unavailable("TensorRT absent: cannot import the Python module 'tensorrt' (%s); on a Jetson it comes "
                          "with JetPack (apt install python3-libnvinfer), on other NVIDIA GPUs from NVIDIA's "
                          "TensorRT packages" % exc) from exc
    return tensorrt


def build_engine(trt, bundle, batch, logger):
    """Serialized engine bytes for ``bundle`` (TensorRT 8.0+ builder API)."""
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(bundle["onnx_path"], "rb") as fh:
        if not parser.parse(fh.read()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise AgentError("TensorRT cannot parse %s: %s" % (bundle["onnx_path"], "; ".join(errors[:3])))
    config = builder.create_builder_config()
    workspace = int(bundle.get("workspace_mb") or 1024) << 20
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    precision = bundle["precision"]
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        if not bundle.get("explicit_quantization"):
            raise AgentError("bundle precision int8 without Q/DQ nodes needs a calibration cache, which the agent "
                             "does not have; rebuild with quantization-aware training (explicit quantization) or fp16")
        config.set_flag(trt.BuilderFlag.INT8)
    if bundle.get("dla_core") is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(bundle["dla_core"])
        if bundle.get("gpu_fallback"):
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        if any(d < 0 for d in shape[1:]):
            raise AgentError("input %s has dynamic dimensions %s beyond the batch axis" % (tensor.name, shape))
        fixed = [int(batch)] + shape[1:]
        profile = profile or builder.create_optimization_profile()
        profile.set_shape(tensor.name, fixed, fixed, fixed)
    if profile is not None:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise AgentError("TensorRT could not build an engine from %s (see the TensorRT log above); the build "
                         "command for trtexec is: %s" % (bundle["onnx_path"], bundle.get("trtexec", "n/a")))
    return bytes(serialized)


class TensorRTRuntime(Runtime):
    name = "tensorrt"

    def load(self):
        from .cuda import Cuda

        trt = import_tensorrt()
        self.module = "tensorrt"
        self.version = getattr(trt, "__version__", None)
        self.cuda = Cuda()
        gpu, cc = self.cuda.device_name(), self.cuda.compute_capability()
        self.details = {"gpu": gpu, "compute_capability": cc, "cuda_runtime": self.cuda.runtime_version()}
        logger = trt.Logger(trt.Logger.WARNING)
        if os.path.isdir(self.path) or os.path.basename(self.path) == "build.json":
            data = self._engine_from_bundle(trt, logger, gpu, cc)
        else:
            with open(self.path, "rb") as fh:
                data = fh.read()
            self.details["engine"] = {"source": "file", "path": self.path}
        self.trt_runtime = trt.Runtime(logger)
        self.engine = self.trt_runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise AgentError("TensorRT %s cannot deserialize the engine (built by another TensorRT version or for "
                             "another GPU); rebuild it on this device" % self.version)
        self.context = self.engine.create_execution_context()
        self._bind(trt)

    def _engine_from_bundle(self, trt, logger, gpu, cc):
        bundle = read_bundle(self.path)
        check_min_version(self.version, bundle.get("min_tensorrt"))
        if bundle.get("compute_capability") and str(bundle["compute_capability"]) != cc:
            self.warnings.append("bundle was made for compute capability %s; this GPU is %s (engine built here)"
                                 % (bundle["compute_capability"], cc))
        key, parts = cache_key(self.version, gpu, cc, bundle["precision"], bundle["onnx_sha256"],
                               bundle.get("dla_core"), self.batch)
        path = cache_path(key, parts)
        info = {"cache_key": key, "key_parts": parts, "cache_path": path, "precision": bundle["precision"]}
        self.details["engine"] = info
        if os.path.isfile(path):
            info["source"] = "cache"
            with open(path, "rb") as fh:
                return fh.read()
        if bundle.get("engine_path"):
            with open(bundle["engine_path"], "rb") as fh:
                data = fh.read()
            if trt.Runtime(logger).deserialize_cuda_engine(data) is not None:
                info["source"] = "bundle"
                return data
            self.warnings.append("the bundle's model.engine does not load here; building a new engine")
        t0 = time.time()
        data = build_engine(trt, bundle, self.batch, logger)
        info.update(source="built", build_s=round(time.time() - t0, 2))
        store_engine(path, data, parts)
        return data

    def _bind(self, trt):
        engine, context, cuda = self.engine, self.context, self.cuda
        import numpy as np  # TensorRT's Python API needs NumPy itself

        self._inputs, self._buffers = [], []
        self.stream = cuda.stream()
        sync = cuda.synchronizer(self.stream)
        if hasattr(engine, "num_io_tensors"):  # TensorRT >= 8.5
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            for name in inputs:
                shape = [int(self.batch) if d < 0 else int(d) for d in engine.get_tensor_shape(name)]
                if any(d < 0 for d in engine.get_tensor_shape(name)):
                    context.set_input_shape(name, shape)
            for name in names:
                shape = [int(d) for d in context.get_tensor_shape(name)]
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                ptr = cuda.malloc(int(np.prod(shape)) * dtype.itemsize)
                self._buffers.append(ptr)
                context.set_tensor_address(name, ptr)
                if name in inputs:
                    self._inputs.append({"name": name, "dtype": dtype.name, "shape": shape, "ptr": ptr})
            execute, stream = context.execute_async_v3, self.stream

            def invoke():
                execute(stream)
                sync()
        else:  # TensorRT 8.0 - 8.4 (JetPack 4.6 ships 8.2)
            bindings = []
            for i in range(engine.num_bindings):
                shape = [int(d) for d in engine.get_binding_shape(i)]
                if engine.binding_is_input(i) and any(d < 0 for d in shape):
                    context.set_binding_shape(i, [int(self.batch) if d < 0 else d for d in shape])
            for i in range(engine.num_bindings):
                shape = [int(d) for d in context.get_binding_shape(i)]
                dtype = np.dtype(trt.nptype(engine.get_binding_dtype(i)))
                ptr = cuda.malloc(int(np.prod(shape)) * dtype.itemsize)
                bindings.append(ptr)
                self._buffers.append(ptr)
                if engine.binding_is_input(i):
                    self._inputs.append({"name": engine.get_binding_name(i), "dtype": dtype.name, "shape": shape,
                                         "ptr": ptr})
            execute, stream = context.execute_async_v2, self.stream

            def invoke():
                execute(bindings, stream)
                sync()
        self.invoke = invoke
        self.delegate = "gpu" if not self.details.get("engine", {}).get("key_parts", {}).get("dla_core") else "dla"

    def input_specs(self):
        return [{"name": i["name"], "dtype": i["dtype"], "shape": i["shape"], "quantization": None}
                for i in self._inputs]

    def set_inputs(self, arrays):
        # Copied to the GPU once: the timed loop measures the engine, like invoke() on TFLite.
        self._host = arrays
        for spec, arr in zip(self._inputs, arrays):
            self.cuda.htod(spec["ptr"], arr.ctypes.data, arr.nbytes)

    def close(self):
        for ptr in getattr(self, "_buffers", []):
            self.cuda.free(ptr)
        self._buffers = []

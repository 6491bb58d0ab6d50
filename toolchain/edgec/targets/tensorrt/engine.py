"""TensorRT engines: the deferred-build document (``build.json``) and its trtexec line, and building
and running an engine where TensorRT and a matching GPU are present.

An engine is tied to the GPU architecture and the TensorRT version, so it is built where it runs.
"""

from __future__ import annotations

import ctypes
import logging
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from edgec.config import Precision
from edgec.errors import EdgecError
from edgec.targets.schema import Profile
from edgec.targets.tensorrt.onnx_io import io_spec, opset_of

log = logging.getLogger(__name__)

BUILD_SPEC = "build.json"
BUILD_SPEC_FORMAT = "edgec-tensorrt-build"
BUILD_SPEC_VERSION = 1


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(v).split(".")[:2] if p.isdigit())


def build_spec(onnx_path: Path, proto, profile: Profile, precision: Precision) -> dict[str, Any]:
    """The deferred-build document the device agent reads (``build.json``)."""
    from edgec.util import sha256_file

    trt = dict(profile.section("tensorrt") or {})
    inputs, outputs = io_spec(proto, batch=1)
    dla = int(trt.get("dla_cores", 0) or 0)
    # DLA runs fp16/int8 only; fp32 stays on the GPU.
    dla_core = 0 if dla > 0 and precision in (Precision.FP16, Precision.INT8) else None
    spec = {
        "format": BUILD_SPEC_FORMAT,
        "version": BUILD_SPEC_VERSION,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "precision": precision.value,
        "explicit_quantization": precision is Precision.INT8,
        "fp16_fallback": precision is Precision.INT8 and profile.supports("fp16"),
        "workspace_mb": int(trt.get("workspace_mb", 1024)),
        "dla_core": dla_core,
        "gpu_fallback": dla_core is not None,
        "min_tensorrt": str(trt["tensorrt"]),
        "compute_capability": str(trt["compute_capability"]),
        "gpu_arch": trt.get("gpu_arch"),
        "opset": opset_of(proto),
        "inputs": inputs,
        "outputs": outputs,
        "timing_cache": "timing.cache",
        "engine": "model.engine",
    }
    spec["trtexec"] = trtexec_command(spec)
    return spec


def trtexec_command(spec: dict[str, Any]) -> str:
    """The trtexec line equivalent to the build spec (TensorRT 8.2 .. 10 flag spellings)."""
    args = ["trtexec", f"--onnx={spec['onnx']}", f"--saveEngine={spec['engine']}"]
    shapes = ",".join(f"{i['name']}:{'x'.join(str(d) for d in i['shape'])}" for i in spec["inputs"])
    args.append(f"--shapes={shapes}")
    if spec["precision"] == "fp16":
        args.append("--fp16")
    elif spec["precision"] == "int8":
        args.append("--int8")
        if spec.get("fp16_fallback"):
            args.append("--fp16")
    if _version_tuple(spec["min_tensorrt"]) >= (8, 4):
        args.append(f"--memPoolSize=workspace:{spec['workspace_mb']}")
    else:
        args.append(f"--workspace={spec['workspace_mb']}")
    if spec["dla_core"] is not None:
        args.append(f"--useDLACore={spec['dla_core']}")
        if spec["gpu_fallback"]:
            args.append("--allowGPUFallback")
    args.append(f"--timingCacheFile={spec['timing_cache']}")
    return " ".join(shlex.quote(a) for a in args)


# ---------------------------------------------------------------------- engine (where TensorRT runs)


def cuda_compute_capabilities() -> list[str]:
    """Compute capabilities of the CUDA GPUs here, read through the driver API (libcuda).

    Raises:
        OSError: no CUDA driver library.
        RuntimeError: the driver reports an error (no device, driver too old).
    """
    lib = None
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise OSError("no CUDA driver (libcuda.so) on this machine")
    if lib.cuInit(0) != 0:
        raise RuntimeError("cuInit failed: no usable CUDA device")
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        raise RuntimeError("cuDeviceGetCount failed")
    caps = []
    for i in range(count.value):
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, i)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, i)  # ..._MINOR
        caps.append(f"{major.value}.{minor.value}")
    return caps


def engine_available(profile: Profile) -> tuple[bool, str]:
    """Whether ``model.engine`` can be built here for ``profile``, and why not."""
    trt_cfg = dict(profile.section("tensorrt") or {})
    try:
        import tensorrt
    except ImportError:
        return False, ("the 'tensorrt' Python package is not installed here (JetPack ships it on the device; "
                       "pip install 'edgec[tensorrt]' on an x86 host with an NVIDIA GPU); the device agent builds "
                       "the engine from build.json")
    try:
        caps = cuda_compute_capabilities()
    except (OSError, RuntimeError) as exc:
        return False, f"no CUDA GPU here ({exc}); the device agent builds the engine from build.json"
    want = str(trt_cfg["compute_capability"])
    if want not in caps:
        return False, (f"no GPU with compute capability {want} ({profile.device}) here (found "
                       f"{', '.join(caps) or 'none'}); engines are tied to the GPU architecture")
    have = getattr(tensorrt, "__version__", "0")
    if _version_tuple(have) != _version_tuple(trt_cfg["tensorrt"]):
        return False, (f"TensorRT {have} here, the device runs {trt_cfg['tensorrt']}; engines are tied to the "
                       "TensorRT version")
    return True, f"TensorRT {have} and a compute capability {want} GPU are present"


def build_engine(onnx_path: Path, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Build ``model.engine`` with the TensorRT Python API as the spec says (precision, workspace,
    DLA with GPU fallback, timing cache).

    Raises:
        EdgecError: the ONNX parser or the builder fails (with the parser's messages).
    """
    import time

    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and _version_tuple(trt.__version__) < (10, 0):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgecError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors[:600]}")
    config = builder.create_builder_config()
    workspace = int(spec["workspace_mb"]) << 20
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace
    if spec["precision"] in ("fp16",) or spec.get("fp16_fallback"):
        config.set_flag(trt.BuilderFlag.FP16)
    if spec["precision"] == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit: the Q/DQ scales are used, no calibrator
    if spec["dla_core"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(spec["dla_core"])
        if spec["gpu_fallback"]:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    for inp in spec["inputs"]:
        shape = tuple(inp["shape"])
        profile.set_shape(inp["name"], shape, shape, shape)
    config.add_optimization_profile(profile)
    cache_path = workdir / spec["timing_cache"]
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgecError("TensorRT could not build the engine (see the TensorRT log above)")
    engine_path = workdir / spec["engine"]
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"built": True, "tensorrt": trt.__version__, "build_s": round(time.perf_counter() - t0, 3),
            "engine_bytes": engine_path.stat().st_size}


class TensorRTRunner:
    """Run a serialized engine on float inputs (batch 1 per call), through the CUDA runtime via ctypes."""

    def __init__(self, path: Path):
        import tensorrt as trt

        self.trt = trt
        self.cudart = ctypes.CDLL("libcudart.so")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise EdgecError(f"cannot load TensorRT engine '{path}' (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        n = self.engine.num_io_tensors
        self.names = [self.engine.get_tensor_name(i) for i in range(n)]
        self.is_input = [self.engine.get_tensor_mode(nm) == trt.TensorIOMode.INPUT for nm in self.names]
        #: the engine's output tensor names (the ONNX outputs'), in the order ``__call__`` returns them
        self.output_names = [nm for nm, is_in in zip(self.names, self.is_input, strict=True) if not is_in]

    def _malloc(self, nbytes: int) -> ctypes.c_void_p:
        ptr = ctypes.c_void_p()
        if self.cudart.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes)) != 0:
            raise RuntimeError("cudaMalloc failed")
        return ptr

    def __call__(self, x) -> list[np.ndarray]:
        """Outputs on ``x``: one array, or a dict keyed by the engine's input names."""
        trt = self.trt
        inputs = [nm for nm, is_in in zip(self.names, self.is_input, strict=True) if is_in]
        if isinstance(x, dict):
            feed = {nm: np.asarray(x[nm], np.float32) for nm in inputs}
        else:
            feed = {inputs[0]: np.asarray(x, np.float32)}
        results: list[list[np.ndarray]] = []
        for i in range(len(next(iter(feed.values())))):
            host = {}
            ptrs = []
            for name, is_in in zip(self.names, self.is_input, strict=True):
                if is_in:
                    arr = np.ascontiguousarray(feed[name][i][None])
                    self.context.set_input_shape(name, arr.shape)
                else:
                    shape = tuple(self.context.get_tensor_shape(name))
                    arr = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
                host[name] = arr
                ptr = self._malloc(arr.nbytes)
                if is_in:
                    self.cudart.cudaMemcpy(ptr, arr.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(arr.nbytes), 1)
                ptrs.append(ptr)
            ok = self.context.execute_v2([p.value for p in ptrs])
            if not ok:
                raise RuntimeError("TensorRT execution failed")
            outs = []
            for name, is_in, ptr in zip(self.names, self.is_input, ptrs, strict=True):
                if not is_in:
                    arr = host[name]
                    self.cudart.cudaMemcpy(arr.ctypes.data_as(ctypes.c_void_p), ptr, ctypes.c_size_t(arr.nbytes), 2)
                    outs.append(arr.astype(np.float32))
                self.cudart.cudaFree(ptr)
            results.append(outs)
        return [np.concatenate([r[k] for r in results]) for k in range(len(results[0]))]

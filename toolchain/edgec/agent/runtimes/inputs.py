"""Benchmark inputs: random in each input's quantized range, or read from a sample file.

NumPy is imported here only because every runtime that uses this module (LiteRT,
tflite_runtime, ONNX Runtime, TensorRT's Python API) itself requires it.
"""

import os

from ..errors import AgentError


def _numpy():
    import numpy
    return numpy


def make_inputs(specs, sample=None, seed=0):
    """Arrays for ``specs`` and a description of each for the report.

    Integer inputs are drawn uniformly over the whole dtype range, which for a quantized input is
    exactly its quantized range; float inputs uniformly from [0, 1). A ``sample`` file (.npy, or
    .npz with ``x`` or one array per input name) gives real data instead; float data for a
    quantized input is quantized with the input's scale and zero point.
    """
    np = _numpy()
    rng = np.random.RandomState(seed)
    data = _load_sample(sample, specs) if sample else None
    arrays, described = [], []
    for i, spec in enumerate(specs):
        dtype = np.dtype(spec["dtype"])
        shape = tuple(int(d) for d in spec["shape"])
        quant = spec.get("quantization")
        desc = {"name": spec["name"], "dtype": dtype.name, "shape": list(shape)}
        if quant:
            desc["quantization"] = quant
        if data is not None:
            arr = _fit(np, data[i], shape, spec["name"])
            if dtype.kind in "iu" and arr.dtype.kind == "f" and quant and quant.get("scale"):
                info = np.iinfo(dtype)
                arr = np.clip(np.round(arr / quant["scale"] + quant["zero_point"]), info.min, info.max)
            arr = arr.astype(dtype)
            desc.update(source="file", file=os.path.basename(sample))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            arr = rng.randint(int(info.min), int(info.max) + 1, size=shape).astype(dtype)
            desc.update(source="random", range=[int(info.min), int(info.max)])
            if quant and quant.get("scale"):
                lo = (info.min - quant["zero_point"]) * quant["scale"]
                hi = (info.max - quant["zero_point"]) * quant["scale"]
                desc["float_range"] = [round(float(lo), 6), round(float(hi), 6)]
        elif dtype.kind == "b":
            arr = rng.randint(0, 2, size=shape).astype(dtype)
            desc.update(source="random", range=[0, 1])
        else:
            arr = rng.random_sample(shape).astype(dtype)
            desc.update(source="random", range=[0.0, 1.0])
        arrays.append(np.ascontiguousarray(arr))
        described.append(desc)
    return arrays, described


def _load_sample(path, specs):
    np = _numpy()
    if not os.path.isfile(path):
        raise AgentError("input sample '%s' does not exist" % path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AgentError("cannot read input sample '%s': %s (expected .npy or .npz)" % (path, exc)) from exc
    if hasattr(loaded, "files"):  # .npz
        if len(specs) == 1 and "x" in loaded.files:
            return [loaded["x"]]
        keys = [_key(s["name"], loaded.files) for s in specs]
        missing = [s["name"] for s, k in zip(specs, keys) if k is None]
        if missing and len(specs) == 1 and len(loaded.files) == 1:
            return [loaded[loaded.files[0]]]
        if missing:
            raise AgentError("input sample '%s' has arrays %s; expected 'x' or one per input: %s"
                             % (path, ", ".join(loaded.files), ", ".join(_model_name(s["name"]) for s in specs)))
        return [loaded[k] for k in keys]
    if len(specs) != 1:
        raise AgentError("input sample '%s' is one array but the model has %d inputs; use an .npz with "
                         "one array per input name" % (path, len(specs)))
    return [loaded]


def _model_name(tensor_name):
    """The model's input name in a tensor name: the TFLite converter calls the input NAME of a
    signature ``serving_default_NAME:0``; ONNX and TensorRT keep NAME."""
    name = tensor_name
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def _key(tensor_name, files):
    """The array of an .npz sample that feeds this input: the tensor's name or the model's."""
    for key in (tensor_name, _model_name(tensor_name)):
        if key in files:
            return key
    return None


def _fit(np, arr, shape, name):
    """The first ``shape[0]`` samples of ``arr`` (adding a batch axis if the file has none)."""
    arr = np.asarray(arr)
    if arr.shape == shape:
        return arr
    if arr.ndim == len(shape) - 1 and tuple(arr.shape) == shape[1:]:
        arr = arr[None]
    if arr.ndim != len(shape) or tuple(arr.shape[1:]) != shape[1:] or arr.shape[0] < shape[0]:
        raise AgentError("input sample for '%s' has shape %s; expected at least %d samples of %s"
                         % (name, list(arr.shape), shape[0], list(shape[1:])))
    return arr[: shape[0]]

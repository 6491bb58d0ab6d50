"""Read a .tflite file's structure (ops, tensors, weights, quantization) without TensorFlow.

Parses the flatbuffer with the schema bindings LiteRT ships, so ``edgec inspect`` and the
manifest can report what is actually in the artifact: op counts, weight sparsity, unique
values per kernel, I/O quantization.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError

_NP_DTYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8,
    "UINT8": np.uint8, "INT16": np.int16, "UINT16": np.uint16, "INT32": np.int32,
    "UINT32": np.uint32, "INT64": np.int64, "UINT64": np.uint64, "BOOL": np.bool_,
}


@lru_cache(maxsize=1)
def schema_module():
    from ai_edge_litert import schema_py_generated as schema

    return schema


@lru_cache(maxsize=1)
def _enum_names() -> tuple[dict[int, str], dict[int, str]]:
    schema = schema_module()
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return ops, types


@dataclasses.dataclass
class Tensor:
    """One tensor of the main subgraph."""

    index: int
    name: str
    dtype: str  # TFLite spelling, lower case: "int8", "float32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    scale: list[float]
    zero_point: list[int]
    quantized_dimension: int
    data: np.ndarray | None  # constant data, None for activations
    is_variable: bool = False

    @property
    def is_constant(self) -> bool:
        return self.data is not None and not self.is_variable

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes) if self.data is not None else 0

    @property
    def is_parameter(self) -> bool:
        """A learned weight: constant float data, or constant quantized data (int8 kernels,
        int32 biases). Axis and shape constants (integers without a scale) are not."""
        return self.is_constant and (self.dtype.startswith(("float", "bfloat")) or bool(self.scale))

    @property
    def num_params(self) -> int:
        return int(self.data.size) if self.is_parameter else 0

    def quantization(self) -> dict[str, Any] | None:
        if not self.scale:
            return None
        q = {"scale": self.scale[0] if len(self.scale) == 1 else self.scale,
             "zero_point": self.zero_point[0] if len(self.zero_point) == 1 else self.zero_point}
        if len(self.scale) > 1:
            q["quantized_dimension"] = self.quantized_dimension
        return q

    def describe(self) -> dict[str, Any]:
        """JSON-ready I/O description (name, dtype, shape, quantization)."""
        sig = [int(d) for d in self.shape_signature] if self.shape_signature else list(self.shape)
        return {"name": self.name, "dtype": self.dtype, "shape": sig, "quantization": self.quantization()}


@dataclasses.dataclass
class Operator:
    index: int
    op: str  # builtin name, e.g. "CONV_2D", or "CUSTOM:<code>"
    inputs: list[int]
    outputs: list[int]


@dataclasses.dataclass
class TFLiteModel:
    """The main subgraph of a .tflite file."""

    path: Path | None
    size: int
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    num_subgraphs: int
    #: the first signature's input and output names -> tensor index ({} when the model has none)
    signature_inputs: dict[str, int] = dataclasses.field(default_factory=dict)
    signature_outputs: dict[str, int] = dataclasses.field(default_factory=dict)

    def output_names(self) -> list[str]:
        """The name of each output in the artifact's order: its signature name, else its tensor name."""
        by_index = {i: n for n, i in self.signature_outputs.items()}
        return [by_index.get(i, self.tensors[i].name) for i in self.outputs]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.op] = counts.get(op.op, 0) + 1
        return dict(sorted(counts.items()))

    def weights(self, op: Operator) -> list[Tensor]:
        """Constant inputs of an op (kernels, biases), in input order."""
        return [self.tensors[i] for i in op.inputs if i >= 0 and self.tensors[i].is_constant]

    def kernel(self, op: Operator) -> Tensor | None:
        """The main weight tensor of a Conv/Dense-like op (its largest constant input)."""
        consts = [t for t in self.weights(op) if t.data is not None and t.data.ndim >= 2]
        return max(consts, key=lambda t: t.data.size) if consts else None


def _decode_buffer(buf, raw: bytes) -> np.ndarray | None:
    data = buf.data
    if data is not None and len(data) > 0:
        return np.asarray(data, dtype=np.uint8)
    offset, size = int(getattr(buf, "offset", 0) or 0), int(getattr(buf, "size", 0) or 0)
    if offset > 1 and size > 0:  # large models keep buffers outside the flatbuffer
        return np.frombuffer(raw, dtype=np.uint8, count=size, offset=offset)
    return None


def load(source: str | Path | bytes) -> TFLiteModel:
    """Parse a .tflite file (path) or its bytes.

    Raises:
        EdgecError: the file cannot be read or is not a TFLite flatbuffer.
    """
    path = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise EdgecError(f"cannot read '{path}': {exc.strerror}") from exc
    else:
        raw = bytes(source)
    schema = schema_module()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise EdgecError(f"'{path or 'model'}' is not a TFLite model (no TFL3 identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(raw, 0)
    except Exception as exc:  # the flatbuffer library raises assorted errors on corrupt input
        raise EdgecError(f"'{path or 'model'}' is a corrupt TFLite model: {exc}") from exc
    op_names, type_names = _enum_names()
    codes = []
    for code in model.operatorCodes or []:
        builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
        name = op_names.get(builtin, f"OP_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            name = f"CUSTOM:{custom}"
        codes.append(name)
    sub = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(sub.tensors or []):
        dtype = type_names.get(int(t.type), f"TYPE_{t.type}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
        data = None
        if t.buffer and model.buffers and t.buffer < len(model.buffers):
            raw_data = _decode_buffer(model.buffers[t.buffer], raw)
            if raw_data is not None and dtype in _NP_DTYPES:
                arr = raw_data.view(_NP_DTYPES[dtype])
                data = arr.reshape(shape) if int(np.prod(shape)) == arr.size else arr
            elif raw_data is not None:
                data = raw_data
        q = t.quantization
        scale = [float(s) for s in (q.scale if q is not None and q.scale is not None else [])]
        zp = [int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]
        name = t.name.decode() if isinstance(t.name, bytes) else (t.name or f"tensor_{i}")
        tensors.append(Tensor(
            index=i, name=name, dtype=dtype.lower(), shape=shape, shape_signature=sig,
            scale=scale, zero_point=zp,
            quantized_dimension=int(q.quantizedDimension or 0) if q is not None else 0,
            data=data, is_variable=bool(t.isVariable),
        ))
    ops = [
        Operator(index=i, op=codes[o.opcodeIndex],
                 inputs=[int(x) for x in (o.inputs if o.inputs is not None else [])],
                 outputs=[int(x) for x in (o.outputs if o.outputs is not None else [])])
        for i, o in enumerate(sub.operators or [])
    ]
    sig_in: dict[str, int] = {}
    sig_out: dict[str, int] = {}
    for sig in (model.signatureDefs or [])[:1]:
        if int(sig.subgraphIndex or 0) != 0:
            continue
        for maps, out in ((sig.inputs, sig_in), (sig.outputs, sig_out)):
            for tm in maps or []:
                out[tm.name.decode() if isinstance(tm.name, bytes) else tm.name] = int(tm.tensorIndex)
    return TFLiteModel(
        path=path, size=len(raw), tensors=tensors, operators=ops,
        inputs=[int(i) for i in sub.inputs], outputs=[int(i) for i in sub.outputs],
        num_subgraphs=len(model.subgraphs), signature_inputs=sig_in, signature_outputs=sig_out,
    )


#: vtable slot of ``SubGraph.outputs`` in the TFLite schema (tensors 4, inputs 6, outputs 8)
_SUBGRAPH_OUTPUTS_SLOT = 8


def reorder_outputs(raw: bytes, names: list[str]) -> bytes:
    """The same model with the main subgraph's outputs in the order of ``names`` (signature output
    names). The converter orders outputs by name; a user's code indexes them by position, in the
    Keras model's order.

    The outputs vector is permuted in place: no byte other than its elements moves, so the
    buffers keep the alignment the converter gave them.

    Raises:
        EdgecError: ``names`` is not a permutation of the model's signature outputs.
    """
    import flatbuffers

    m = load(raw)
    if sorted(names) != sorted(m.signature_outputs) or len(names) != len(m.outputs):
        raise EdgecError(f"cannot order the TFLite outputs as {names}: its signature outputs are "
                         f"{sorted(m.signature_outputs)}")
    wanted = [m.signature_outputs[n] for n in names]
    if sorted(wanted) != sorted(m.outputs):
        raise EdgecError("the TFLite signature outputs are not the subgraph's outputs")
    if wanted == m.outputs:
        return bytes(raw)
    schema = schema_module()
    sub = schema.Model.GetRootAs(raw, 0).Subgraphs(0)
    slot = sub._tab.Offset(_SUBGRAPH_OUTPUTS_SLOT)  # noqa: SLF001 (the generated reader's own table)
    start = sub._tab.Vector(slot)  # noqa: SLF001
    out = bytearray(raw)
    current = [int(np.frombuffer(out, dtype="<i4", count=1, offset=start + 4 * j)[0]) for j in range(len(m.outputs))]
    if current != m.outputs:
        raise EdgecError("unexpected TFLite layout: the subgraph outputs are not where the schema puts them")
    for j, index in enumerate(wanted):
        flatbuffers.encode.Write(flatbuffers.packer.int32, out, start + 4 * j, index)
    return bytes(out)


def float_ops(m: TFLiteModel) -> list[dict[str, Any]]:
    """The ops of an integer model that still compute in float (float input or output tensors),
    besides the QUANTIZE of a float model input and the DEQUANTIZE of a float model output.

    Returns:
        ``{"index", "op", "tensors"}`` per op, in graph order (empty when full-integer).
    """
    inputs, outputs = set(m.inputs), set(m.outputs)
    found = []
    for op in m.operators:
        ins = [m.tensors[i] for i in op.inputs if i >= 0]
        outs = [m.tensors[i] for i in op.outputs if i >= 0]
        floats = [t for t in [*ins, *outs] if t.dtype.startswith(("float", "bfloat")) and not t.is_constant]
        if not floats:
            continue
        if op.op == "QUANTIZE" and all(t.index in inputs for t in ins):
            continue
        if op.op == "DEQUANTIZE" and all(t.index in outputs for t in outs):
            continue
        found.append({"index": op.index, "op": op.op, "tensors": [t.name for t in floats][:4]})
    return found

"""Channel (filter) pruning: remove the least important output channels and rebuild smaller layers.

Unlike magnitude pruning, which leaves every shape in place, this changes the model: each
Conv/Dense layer keeps ``1 - FRACTION`` of its output channels, the layers that read them lose
the matching inputs (the next Conv/Dense, and on the way BatchNormalization, DepthwiseConv2D,
PReLU), and the model is rebuilt from its layer configs with the kept weights copied over. The
runtime then runs dense kernels that are smaller: fewer multiplies on every device.

Channels are followed through the graph as *groups*. A Conv/Dense output starts a group; layers
that act on each channel alone (BatchNormalization, activations, pooling, padding, depthwise
convolutions, Flatten) pass it on; an element-wise merge (Add, Multiply, ...) ties the groups of
its inputs, so a residual stage keeps the same channels in every branch; Concatenate lays groups
side by side. A group is kept whole, with the reason listed, when it reaches a model output (the
output layer keeps its size), a layer that fixes its channel count or mixes channels in a way
the surgery cannot follow (Reshape, Lambda, Softmax, LayerNormalization, a custom layer), a shared
layer, or the model input; and the stem (convolutions over the image's 1 to 4 channels): every
feature passes through it and its cut saves little (the separable digits net: 2.3 % of the MACs;
with it halved, ``--prune-channels 0.5`` lost 0.00 to 1.01 points over five seeds, 0.25 to 0.76
with it whole). A stem tied to later layers by a residual Add is cut with them.

Importance per output channel: |gamma| of the BatchNormalization right after the layer (the
default, Network Slimming; layers without one fall back to L1), or the L1 or L2 norm of its kernel
slice.
A tied group sums its members' scores, each scaled to its own maximum.

The rebuilt model's BatchNorm statistics are re-estimated on the fine-tune inputs before and
after fine-tuning (:func:`edgec.optimize.graph.recalibrate_batchnorm`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.optimize import graph
from edgec.optimize.spec import OptimizeSpec
from edgec.optimize.train import FineTuneData, fine_tune
from edgec.progress import Progress

_PRODUCERS = ("Conv1D", "Conv2D", "Conv3D", "Dense", "SeparableConv1D", "SeparableConv2D")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
_PER_CHANNEL = ("BatchNormalization", "PReLU")  # weights with one entry per channel, sliced
_CHANNELWISE = (  # act on each channel alone and keep the channel axis last: passed through as they are
    "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Identity",
)
_ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "elu", "selu", "gelu", "swish", "silu",
    "softplus", "softsign", "exponential", "mish", "leaky_relu",
}
_MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
MULTIPLE = 4  # kept channel counts are rounded to a multiple of this (see keep_count)
# a group whose producers are all convolutions over at most this many channels (the stem over the
# image's grey, RGB or RGBA channels) is kept whole
STEM_CHANNELS = 4
STEM_REASON = (f"the stem: reads at most {STEM_CHANNELS} channels (the image); every feature the "
               "model sees passes through it, while its cut saves few MACs")


@dataclasses.dataclass(frozen=True)
class Layout:
    """The channels of a tensor: groups laid side by side, repeated ``repeat`` times (Flatten)."""

    groups: tuple[int, ...]
    repeat: int = 1


@dataclasses.dataclass
class Plan:
    """What the surgery removes, decided on the original model.

    Attributes:
        kept: group root -> kept channel indices (sorted), for every group.
        sizes: group root -> channel count before.
        layouts: tensor id -> its layout in the original model.
        producers: producer layer name -> (input layout or None, output group).
        groups: group root -> member producer layer names.
        blocked: group root -> why the group is kept whole.
        fallback: producers ranked by L1 because the ``bn`` criterion found no BatchNorm after them.
    """

    kept: dict[int, list[int]]
    sizes: dict[int, int]
    layouts: dict[str, Layout]
    producers: dict[str, tuple[Layout | None, int]]
    groups: dict[int, list[str]]
    blocked: dict[int, str]
    fallback: list[str]
    layer_inputs: dict[str, Layout]  # every layer with channel-indexed weights -> its input layout

    def indices(self, layout: Layout) -> np.ndarray:
        """Kept flat channel indices of a tensor with ``layout``."""
        width = sum(self.sizes[g] for g in layout.groups)
        out, offset = [], 0
        for g in layout.groups:
            out.append(np.asarray(self.kept[g], dtype=np.int64) + offset)
            offset += self.sizes[g]
        one = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        return np.concatenate([one + r * width for r in range(layout.repeat)])

    def width(self, layout: Layout) -> int:
        return sum(self.sizes[g] for g in layout.groups) * layout.repeat

    def pruned_groups(self) -> list[int]:
        return [g for g in self.kept if len(self.kept[g]) < self.sizes[g]]


class _Groups:
    """Union-find over channel groups, keeping each root's size, members and blocking reason."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: dict[int, list[str]] = {}
        self.blocked: dict[int, str] = {}

    def new(self, size: int, member: str | None = None, blocked: str | None = None) -> int:
        g = len(self.parent)
        self.parent.append(g)
        self.size.append(int(size))
        self.members[g] = [member] if member else []
        if blocked:
            self.blocked[g] = blocked
        return g

    def root(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a == b:
            return
        self.parent[b] = a
        self.members[a] = self.members.get(a, []) + self.members.pop(b, [])
        reason = self.blocked.pop(b, None)
        if reason and a not in self.blocked:
            self.blocked[a] = reason

    def block(self, layout: Layout | None, reason: str) -> None:
        for g in (layout.groups if layout else ()):
            r = self.root(g)
            self.blocked.setdefault(r, reason)


def _kind(layer) -> str:
    return type(layer).__name__


def _channels_last(layer) -> bool:
    cfg = layer.get_config()
    fmt = cfg.get("data_format")
    return fmt in (None, "channels_last")


def analyse(model, fraction: float, criterion: str = "l1") -> Plan:
    """Decide which output channels each Conv/Dense group keeps.

    Raises:
        EdgecError: the model is not functional (the surgery follows its graph).
    """
    if not getattr(model, "_is_graph_network", False):
        raise EdgecError(f"model '{model.name}' is not a functional or Sequential model with an input; "
                         "--prune-channels follows the layer graph")
    groups = _Groups()
    layouts, producers, layer_inputs = _trace(model, groups)

    # normalise group ids to roots
    def rooted(layout: Layout | None) -> Layout | None:
        return None if layout is None else Layout(tuple(groups.root(g) for g in layout.groups), layout.repeat)

    layouts = {k: rooted(v) for k, v in layouts.items()}
    layer_inputs = {k: rooted(v) for k, v in layer_inputs.items()}
    producers = {k: (rooted(lay), groups.root(g)) for k, (lay, g) in producers.items()}
    roots = sorted({groups.root(g) for g in range(len(groups.parent))})
    sizes = {r: groups.size[r] for r in roots}
    members = {r: list(groups.members.get(r, [])) for r in roots}
    blocked = {r: groups.blocked[r] for r in roots if r in groups.blocked}
    for r in roots:
        if r not in blocked and members[r] and all(_reads_image(model.get_layer(m)) for m in members[r]):
            blocked[r] = STEM_REASON
    fallback: list[str] = []
    kept: dict[int, list[int]] = {}
    for r in roots:
        keep = sizes[r] if r in blocked or not members[r] else keep_count(sizes[r], fraction)
        if keep >= sizes[r]:
            kept[r] = list(range(sizes[r]))
            continue
        score = np.zeros(sizes[r])
        for member in members[r]:
            s, fell_back = _importance(model, member, criterion)
            if fell_back:
                fallback.append(member)
            score += s / (s.max() if s.max() > 0 else 1.0)
        order = np.argsort(-score, kind="stable")[:keep]
        kept[r] = sorted(int(i) for i in order)
    return Plan(kept=kept, sizes=sizes, layouts=layouts, producers=producers, groups=members, blocked=blocked,
                fallback=sorted(fallback), layer_inputs=layer_inputs)


def _trace(model, groups: _Groups):
    """Follow the channels through the graph, tensor by tensor: each tensor's layout (which channel
    groups its last axis holds), each producer's input layout and output group, each layer's input
    layout; what fixes or mixes channels blocks their groups."""
    layouts: dict[str, Layout] = {}
    producers: dict[str, tuple[Layout | None, int]] = {}
    layer_inputs: dict[str, Layout] = {}
    calls: dict[str, int] = {}
    for node in graph.nodes_in_order(model):
        calls[node.layer.name] = calls.get(node.layer.name, 0) + (0 if node.is_input else 1)

    def fresh(tensor, reason: str) -> Layout:
        shape = graph.shape_of(tensor)
        return Layout((groups.new(shape[-1] if len(shape) > 1 and shape[-1] else 1, blocked=reason),))

    for node in graph.nodes_in_order(model):
        outputs = graph.flat(node.outputs)
        if node.is_input:
            for t in outputs:
                layouts[str(id(t))] = fresh(t, "model input")
            continue
        kind, name = _kind(node.layer), node.layer.name
        ins = [layouts.get(str(id(t))) for t in node.keras_inputs]
        out_layout = _node_layout(node, kind, ins, calls[name], groups, producers, layer_inputs)
        for t in outputs:
            layouts[str(id(t))] = out_layout if out_layout is not None else fresh(t, f"output of {kind} '{name}'")
    for t in model.outputs:
        groups.block(layouts.get(str(id(t))), "reaches a model output (the output layer keeps its size)")
    return layouts, producers, layer_inputs


def _node_layout(node, kind: str, ins: list[Layout | None], calls: int, groups: _Groups,
                 producers: dict, layer_inputs: dict) -> Layout | None:
    """The layout of one node's outputs (None: a fresh, blocked group), recording producers and
    layer inputs; the inputs' groups are blocked where the node fixes or mixes channels."""
    layer, name = node.layer, node.layer.name
    in_layout = ins[0] if ins else None
    reason = (f"'{name}' is a shared layer (called {calls} times)" if calls > 1
              else None if _channels_last(layer) else f"{kind} '{name}' is channels_first")
    if reason:
        for lay in ins:
            groups.block(lay, reason)
        return None
    config = layer.get_config() if kind in _PRODUCERS or kind in _DEPTHWISE else {}  # others may have none
    single = int(config.get("depth_multiplier", 1)) == 1
    if kind in _PRODUCERS and single and (kind == "Dense" or int(config.get("groups", 1) or 1) == 1):
        if in_layout is not None and in_layout.repeat != 1 and kind != "Dense":
            groups.block(in_layout, f"{kind} '{name}' reads a flattened tensor")
        out = groups.new(int(graph.shape_of(graph.flat(node.outputs)[0])[-1]), member=name)
        producers[name] = (in_layout, out)
        if in_layout is not None:
            layer_inputs[name] = in_layout
        return Layout((out,))
    if (kind in _DEPTHWISE and single) or (kind in _PER_CHANNEL and _per_channel_ok(layer, node)):
        layer_inputs[name] = in_layout
        return in_layout
    if kind in _CHANNELWISE or (kind == "Activation" and _activation(layer) in _ELEMENTWISE_ACTIVATIONS):
        return in_layout
    if kind == "Flatten":
        shape = graph.shape_of(node.keras_inputs[0])
        if in_layout is None or any(d is None for d in shape[1:]):
            groups.block(in_layout, f"Flatten '{name}' has an input of unknown size")
            return None
        return Layout(in_layout.groups, in_layout.repeat * graph.prod(shape[1:-1]))
    if kind in _MERGES and len(ins) > 1 and all(lay is not None for lay in ins):
        return _merged(kind, name, ins, groups)
    if kind == "Concatenate" and _concat_last(layer, node) and all(lay is not None and lay.repeat == 1 for lay in ins):
        return Layout(tuple(g for lay in ins for g in lay.groups))
    for lay in ins:
        groups.block(lay, f"feeds {kind} '{name}', which fixes or mixes its channels")
    return None


def _merged(kind: str, name: str, ins: list[Layout], groups: _Groups) -> Layout | None:
    """An element-wise merge (Add, Multiply, ...) ties its inputs' channel groups together, when they
    line up; otherwise it blocks them."""
    first = ins[0]
    aligned = all(lay.repeat == first.repeat and len(lay.groups) == len(first.groups)
                  and all(groups.size[groups.root(a)] == groups.size[groups.root(b)]
                          for a, b in zip(lay.groups, first.groups, strict=True)) for lay in ins)
    if not aligned:
        for lay in ins:
            groups.block(lay, f"{kind} '{name}' joins tensors whose channels do not line up")
        return None
    for lay in ins[1:]:
        for a, b in zip(first.groups, lay.groups, strict=True):
            groups.union(a, b)
    return first


def keep_count(size: int, fraction: float) -> int:
    """Channels kept of ``size`` when removing ``fraction``: at least 1; a multiple of 4 for layers of
    16 channels or more (SIMD and int8 kernels work in such blocks)."""
    keep = max(1, int(round(size * (1.0 - fraction))))
    if size >= 4 * MULTIPLE and keep >= MULTIPLE:
        keep = max(MULTIPLE, int(round(keep / MULTIPLE)) * MULTIPLE)
    return min(keep, size)


def _reads_image(layer) -> bool:
    """A convolution over at most :data:`STEM_CHANNELS` channels: a stem reading the image."""
    shape = graph.shape_of(layer.input)
    return _kind(layer) != "Dense" and len(shape) >= 3 and bool(shape[-1]) and shape[-1] <= STEM_CHANNELS


def _activation(layer) -> str:
    act = layer.get_config().get("activation")
    return act if isinstance(act, str) else str(act)


def _per_channel_ok(layer, node) -> bool:
    rank = len(graph.shape_of(node.keras_inputs[0]))
    if _kind(layer) == "BatchNormalization":
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        return axis is not None and axis in (-1, rank - 1)
    alpha = layer.get_weights()[0] if layer.get_weights() else None  # PReLU: alpha per channel (or shared)
    return alpha is not None and alpha.shape[-1] in (1, graph.shape_of(node.keras_inputs[0])[-1])


def _concat_last(layer, node) -> bool:
    rank = len(graph.shape_of(node.keras_inputs[0]))
    return layer.axis in (-1, rank - 1)


def _named(layer) -> dict[str, np.ndarray]:
    return {w.name.split("/")[-1].split(":")[0]: np.asarray(w.numpy()) for w in layer.weights}


def _out_kernel(layer) -> np.ndarray:
    w = _named(layer)
    return w.get("pointwise_kernel", w.get("kernel"))


def _importance(model, name: str, criterion: str) -> tuple[np.ndarray, bool]:
    """Score per output channel of producer ``name``; True when ``bn`` fell back to L1."""
    layer = model.get_layer(name)
    kernel = _out_kernel(layer)
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]).astype(np.float64))
    if criterion == "bn":
        bn = _batchnorm_after(layer)
        if bn is not None:
            return np.abs(np.asarray(bn, dtype=np.float64)), False
        return flat.sum(axis=0), True
    if criterion == "l2":
        return np.sqrt((flat ** 2).sum(axis=0)), False
    return flat.sum(axis=0), False


def _batchnorm_after(layer) -> np.ndarray | None:
    """|gamma| source: the scale of the BatchNormalization that alone reads ``layer``'s output."""
    if len(layer._outbound_nodes) != 1:
        return None
    nxt = layer._outbound_nodes[0].layer
    if _kind(nxt) != "BatchNormalization":
        return None
    w = _named(nxt)
    if "gamma" in w:
        return w["gamma"]
    return None


def rebuild(model, plan: Plan):
    """A new model with the smaller layers of ``plan`` and the kept weights of ``model``.

    Every tensor keeps its layer names, so outputs are found by the same names.
    """
    def smaller(layer, args, kwargs):
        config = layer.get_config()
        if layer.name in plan.producers:
            _, out = plan.producers[layer.name]
            key = "units" if "units" in config else "filters"
            config[key] = len(plan.kept[out])
        clone = layer.__class__.from_config(config)
        outputs = clone(*args, **kwargs)
        clone.set_weights(_sliced(layer, plan))
        return outputs

    return graph.rebuild(model, smaller)


def _sliced(layer, plan: Plan) -> list[np.ndarray]:
    """``layer``'s weights (in its own order) with the removed input and output channels cut out."""
    weights = [np.asarray(w.numpy()) for w in layer.weights]
    names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
    if layer.name not in plan.layer_inputs and layer.name not in plan.producers:
        return weights
    kind = _kind(layer)
    in_layout = plan.layer_inputs.get(layer.name)
    cin = plan.indices(in_layout) if in_layout is not None else None
    cout = np.asarray(plan.kept[plan.producers[layer.name][1]]) if layer.name in plan.producers else None
    out = []
    for name, w in zip(names, weights, strict=True):
        if kind in _PRODUCERS:
            if name in ("kernel", "pointwise_kernel"):
                if cin is not None:
                    w = np.take(w, cin, axis=w.ndim - 2)
                w = np.take(w, cout, axis=w.ndim - 1)
            elif name == "depthwise_kernel":  # SeparableConv: (..., in, 1)
                w = np.take(w, cin, axis=w.ndim - 2) if cin is not None else w
            elif name == "bias":
                w = np.take(w, cout, axis=0)
        elif kind in _DEPTHWISE:
            if name == "depthwise_kernel":
                w = np.take(w, cin, axis=w.ndim - 2)
            elif name == "bias":
                w = np.take(w, cin, axis=0)
        elif kind in _PER_CHANNEL and w.shape and w.shape[-1] == plan.width(in_layout):
            w = np.take(w, cin, axis=w.ndim - 1)
        out.append(w)
    return out


def masked(model, plan: Plan):
    """A copy of ``model`` computing what :func:`rebuild` computes: the inputs of every Conv/Dense
    layer that the surgery removes are zeroed, so removed channels contribute nothing."""
    copy = graph.private_copy(model)
    for name, (in_layout, _) in plan.producers.items():
        if in_layout is None:
            continue
        layer = copy.get_layer(name)
        keep = np.zeros(plan.width(in_layout), dtype=bool)
        keep[plan.indices(in_layout)] = True
        # a separable layer reads its input through the depthwise kernel (no bias before the pointwise)
        target = "depthwise_kernel" if _kind(layer).startswith("Separable") else "kernel"
        weights = []
        for w in layer.weights:
            value = np.asarray(w.numpy())
            if w.name.split("/")[-1].split(":")[0] == target:
                shape = [1] * value.ndim
                shape[value.ndim - 2] = -1
                value = value * keep.reshape(shape)
            weights.append(value)
        layer.set_weights(weights)
    return copy


def prune_channels(model, data: FineTuneData, spec: OptimizeSpec, progress: Progress) -> tuple[Any, dict[str, Any]]:
    """Remove channels, rebuild, fine-tune; return the smaller model and what was done.

    Raises:
        EdgecError: no layer can lose channels (every group is tied to an output or a fixed layer).
    """
    plan = analyse(model, spec.prune_channels, spec.channel_criterion)
    if not plan.pruned_groups():
        reasons = "; ".join(sorted({f"{', '.join(plan.groups[g])}: {plan.blocked[g]}" for g in plan.blocked
                                    if plan.groups.get(g)})) or "no Conv/Dense layer"
        raise EdgecError(f"--prune-channels {spec.prune_channels:g} finds no layer of model '{model.name}' that can "
                         f"lose channels ({reasons}); drop --prune-channels")
    before = graph.layer_costs(model)
    smaller = rebuild(model, plan)
    after = graph.layer_costs(smaller)
    # BatchNorm statistics of the smaller model, before fine-tuning (a good start) and after it
    recalibrated = graph.recalibrate_batchnorm(smaller, data.x_train)
    fit = fine_tune(smaller, data, spec, step="channels", progress=progress)
    graph.recalibrate_batchnorm(smaller, data.x_train)
    layers = []
    for name, cost in before.items():
        if name not in after or (cost["macs"] == 0 and cost["params"] == 0):
            continue
        row: dict[str, Any] = {"layer": name, "type": _kind(model.get_layer(name))}
        if name in plan.producers:
            g = plan.producers[name][1]
            row.update(channels_before=plan.sizes[g], channels_after=len(plan.kept[g]))
            if g in plan.blocked:
                row["kept_whole"] = plan.blocked[g]
            if len(plan.groups[g]) > 1:
                row["tied_with"] = [m for m in plan.groups[g] if m != name]
        row.update(params_before=cost["params"], params_after=after[name]["params"], macs_before=cost["macs"],
                   macs_after=after[name]["macs"])
        layers.append(row)
    info: dict[str, Any] = {
        "fraction": spec.prune_channels, "criterion": spec.channel_criterion,
        "groups": {"pruned": len(plan.pruned_groups()),
                   "kept_whole": len([g for g in plan.blocked if plan.groups.get(g)])},
        "layers": layers,
        "kept_whole": [{"layers": plan.groups[g], "reason": plan.blocked[g]} for g in sorted(plan.blocked)
                       if plan.groups.get(g)],
        "batchnorm_recalibrated": recalibrated,
        "fine_tune": fit,
    }
    if plan.fallback:
        info["criterion_fallback_l1"] = plan.fallback
    return smaller, info

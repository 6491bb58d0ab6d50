"""What standard architectures bring to the ONNX/TensorRT path, each on a small model with the
quirk alone: constants shared by many nodes (hard-swish), grouped convolutions (tf-keras runs them
as nested jit-compiled functions), attention (activation x activation MatMul) with exact GELU
(Erfc), and a SavedModel signature that captures constants and variables."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'edgec[onnx]'")
pytest.importorskip("tf2onnx", reason="needs the onnx extra")

RNG = np.random.default_rng(0)


def _keras():
    from edgec.tfcompat import set_seed, tf_and_keras

    tf, keras = tf_and_keras()
    set_seed(0)
    return tf, keras


def _parity(model, proto, x, atol=1e-4):
    from edgec.targets.tensorrt.onnx_io import OrtRunner

    runner = OrtRunner(proto.SerializeToString())
    ref = np.asarray(model(x, training=False))
    assert np.abs(runner(x)[0] - ref).max() < atol


def _quantized(proto, x):
    """Q/DQ for TensorRT, opened by ONNX Runtime as the build's verification does."""
    from edgec.targets.tensorrt import quantize
    from edgec.targets.tensorrt.onnx_io import OrtRunner

    result = quantize.quantize_qdq(quantize.prepare_for_quantization(proto), x)
    runner = OrtRunner(result.model.SerializeToString())
    assert np.isfinite(runner(x[:4])[0]).all()
    assert quantize.unquantized_ops(result.model) == []
    return result


def test_shared_constants_get_a_qdq_pair_per_consumer():
    """hard-swish's 3 and 1/6, one initializer each in tf2onnx's graph, feed every block: before
    the fix ONNX Runtime refused the Q/DQ model ("Attempt to replace the existing tensor")."""
    from edgec.targets.tensorrt import export, quantize

    tf, keras = _keras()
    inp = keras.Input((12, 12, 3))
    x = inp
    for filters in (8, 8, 16):
        x = keras.layers.Conv2D(filters, 3, padding="same")(x)
        x = x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)  # hard-swish, as MobileNetV3 writes it
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    x = RNG.uniform(-1, 1, (16, 12, 12, 3)).astype(np.float32)
    proto = export.export_onnx(model, 17)
    pre = quantize.prepare_for_quantization(proto)
    inits = {i.name for i in pre.graph.initializer}
    used = [name for node in pre.graph.node for name in node.input if name in inits]
    assert len(used) == len(set(used)), "every initializer has one consumer"
    assert quantize.own_initializers(proto) > 0, "the export shares constants among blocks"
    _quantized(export.export_onnx(model, 17), x)


def test_grouped_convolution_is_inlined():
    """tf-keras runs Conv2D(groups>1) as a jit-compiled function: exported as PartitionedCall
    ("No Op registered for PartitionedCall") before nested functions were inlined."""
    from edgec.targets.tensorrt import export

    tf, keras = _keras()
    inp = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(8, 3, padding="same", groups=4, activation="relu")(inp)
    x = keras.layers.Conv2D(16, 1, groups=2)(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    proto = export.export_onnx(model, 17)
    ops = {n.op_type for n in proto.graph.node}
    assert "PartitionedCall" not in ops and "Conv" in ops
    assert export.check_for_tensorrt(proto, "10.3")["onnx_checker"] == "passed"
    x = RNG.uniform(-1, 1, (4, 8, 8, 8)).astype(np.float32)
    _parity(model, proto, x)
    _quantized(proto, x)


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_attention_block(gelu):
    """Q x K^T and P x V multiply two activations: per-tensor Q/DQ on both inputs (before: "weights
    of MatMul are not quantized per channel"); exact GELU's Erfc becomes 1 - Erf."""
    from edgec.targets.tensorrt import export

    tf, keras = _keras()
    inp = keras.Input((6, 16))
    h = keras.layers.LayerNormalization()(inp)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    x = keras.layers.Add()([inp, h])
    h = keras.layers.Dense(32)(x)
    h = keras.layers.Activation("gelu")(h) if gelu == "exact" else tf.nn.gelu(h, approximate=True)
    x = keras.layers.Add()([x, keras.layers.Dense(16)(h)])
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(x)))
    proto = export.export_onnx(model, 17)
    ops = {n.op_type for n in proto.graph.node}
    assert "Erfc" not in ops and (("Erf" in ops) == (gelu == "exact"))
    export.check_for_tensorrt(proto, "10.3")
    x = RNG.normal(0, 1, (16, 6, 16)).astype(np.float32)
    _parity(model, proto, x)
    report = _quantized(proto, x).report
    assert len(report["activation_matmuls"]) >= 2 and all(report["activation_matmuls"].values())
    assert all(report["weights_per_channel"].values())


def test_signature_captures_are_frozen(tmp_path):
    """A SavedModel signature capturing a constant and variables (an audio front end): before,
    the ONNX graph asked for the captures as extra inputs ('340:0', ...)."""
    from edgec.model_io import SignatureModel
    from edgec.targets.tensorrt import export

    tf, keras = _keras()
    frame = 16
    k = np.arange(frame)[:, None] * np.arange(frame // 2 + 1)[None, :] * 2 * np.pi / frame

    class Frontend(tf.Module):
        def __init__(self):
            super().__init__()
            self.window = tf.constant(np.hanning(frame).astype(np.float32))
            self.cos = tf.constant(np.cos(k).astype(np.float32))
            self.sin = tf.Variable(np.sin(k).astype(np.float32), trainable=False)
            inp = keras.Input((8, frame // 2 + 1))
            self.head = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp)))

        @tf.function(input_signature=[tf.TensorSpec([None, 8 * frame], tf.float32, name="waveform")])
        def serve(self, waveform):
            frames = tf.reshape(waveform, [-1, 8, frame]) * self.window
            spec = tf.sqrt(tf.square(tf.matmul(frames, self.cos)) + tf.square(tf.matmul(frames, self.sin)))
            return {"scores": self.head(tf.math.log(spec + 1e-3), training=False)}

    module = Frontend()
    tf.saved_model.save(module, str(tmp_path / "audio"), signatures={"serving_default": module.serve})
    model = SignatureModel(tmp_path / "audio")
    proto = export.export_onnx(model, 17)
    assert [i.name for i in proto.graph.input] == ["waveform"]
    x = RNG.normal(0, 0.3, (8, 8 * frame)).astype(np.float32)
    from edgec.targets.tensorrt.onnx_io import OrtRunner

    got = OrtRunner(proto.SerializeToString())(x)[0]
    assert np.abs(got - model(x)["scores"].numpy()).max() < 1e-4

"""TFLite target: TFLiteConverter -> model.tflite (fp32 | fp16 | dynamic | int8), run by LiteRT.

* :mod:`.litert`: the converter and the LiteRT runner (shared with the Edge TPU target, which
  needs the same full-integer model before its compiler step);
* :mod:`.target`: the :class:`~.target.TFLiteTarget` a build uses;
* :mod:`.accuracy`: the accuracy backend: selective int8 quantization with ops left in float.

Importing this package imports none of TensorFlow or LiteRT.
"""

from edgec.targets.tflite.litert import (
    LiteRTRunner,
    artifact_info,
    convert,
    converter_reason,
    dequantize,
    input_indices,
    quantize,
    representative_dataset,
)
from edgec.targets.tflite.target import TFLiteTarget

__all__ = ["LiteRTRunner", "TFLiteTarget", "artifact_info", "convert", "converter_reason", "dequantize",
           "input_indices", "quantize", "representative_dataset"]

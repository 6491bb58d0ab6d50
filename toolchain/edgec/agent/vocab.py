"""The words edgec and its agent share, each defined once: precisions, target kinds, runtimes,
power sensors and the label syntax.

This module is standard-library only and keeps Python 3.6 syntax: it ships inside the agent
zipapp, and the host (profiles, CLI, collector) imports these definitions from here, never the
other way round.
"""

import re

FP32, FP16, DYNAMIC, INT8 = "fp32", "fp16", "dynamic", "int8"
#: artifact precisions, as spelled on the command line and in manifests
PRECISIONS = (FP32, FP16, DYNAMIC, INT8)

#: target kinds: what turns a Keras model into a device's artifact (a profile names one)
TARGET_KINDS = ("tflite", "edgetpu", "tensorrt")

#: runtimes the agent runs artifacts with
RUNTIMES = ("litert", "tflite", "edgetpu", "onnxruntime", "tensorrt")
#: what ``--runtime`` accepts: a runtime, or ``auto`` (from the artifact)
RUNTIME_CHOICES = ("auto",) + RUNTIMES

#: power sensors the agent reads (see ``edgec.agent.sensors``), in the order ``auto`` tries them
#: (``command``, an external meter, is used only when asked for)
SENSORS = ("ina3221", "ina3221x", "tegrastats", "nvml", "nvidia-smi", "rapl", "hwmon", "command")
AUTO_SENSORS = tuple(s for s in SENSORS if s != "command")
#: what ``--power`` accepts: a sensor, ``auto`` (the first one that reads) or ``none``
SENSOR_CHOICES = ("auto", "none") + SENSORS

#: device names and label keys (what ``--name`` and ``--labels k=v,...`` accept, here and on the collector)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: label values: up to 128 characters, no control characters, ',' or '='
LABEL_VALUE_PATTERN = r"^[^\x00-\x1f,=]{1,128}$"
#: a file a measuring job ships: one plain name, or 'bundle/NAME' for a TensorRT bundle (never a path)
FILE_PATTERN = r"^(bundle/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
#: the states a fleet job ends in
#: the collector API's path prefix, the same for the agent and the host
API = "/v1"
JOB_TERMINAL_STATES = ("done", "failed", "cancelled")
#: a collector job's states: waiting, leased to a device, then one of the terminal states
JOB_STATES = ("queued", "leased") + JOB_TERMINAL_STATES
LABEL_KEY = re.compile(NAME_PATTERN)
LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)


def parse_labels(text):
    """``k=v,k2=v2`` -> dict.

    Raises:
        ValueError: a pair that is not KEY=VALUE, or a key outside the label alphabet (the
            message names the pair).
    """
    labels = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        key, sep, value = (x.strip() for x in pair.partition("="))
        if not sep or not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
            raise ValueError("label '%s': expected KEY=VALUE pairs separated by commas, KEY of letters, digits, "
                             "'.', '_' or '-' (at most 64), VALUE of at most 128 characters without ',' or '='"
                             % pair.strip())
        labels[key] = value
    return labels

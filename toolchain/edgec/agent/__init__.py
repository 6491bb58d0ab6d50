"""edgec device agent: measures latency and power where the model runs.

Standard library only, Python 3.6 syntax (Jetson Nano's JetPack 4.6 ships 3.6, Coral's Mendel
3.7). Ships to a device as one zipapp (``edgec agent bundle -o edgec-agent.pyz``) and runs
without edgec installed, so every import inside this package is relative. Runtimes (LiteRT /
tflite_runtime, the Edge TPU delegate, TensorRT, ONNX Runtime) and power sensors are adapters
imported only when used.

The benchmark core is :func:`edgec.agent.bench.run_benchmark` (artifact path + options ->
report dict); the report document is defined in :mod:`edgec.agent.schema`.
"""

__version__ = "0.1.0"

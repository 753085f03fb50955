"""Engines: TensorRT engines built from model packages (:mod:`.tensorrt`), cached per GPU and
TensorRT version (:mod:`.cache`), with our TensorRT plugins (:mod:`.plugins`); ``vsr-build-engine``
is its tool. ONNX Runtime sessions are made by the runtime's backend (:mod:`runtime.backends.ort`)."""

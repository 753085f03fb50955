"""Engines: ONNX Runtime sessions and TensorRT engines built from model packages."""

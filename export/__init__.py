"""Export: cut a network into per-stage ONNX graphs and write a model package (manifest + graphs)."""

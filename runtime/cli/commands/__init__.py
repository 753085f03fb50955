"""The work of each console script, one module per tool (:mod:`.run`, :mod:`.export`, :mod:`.build_engine`,
:mod:`.parity`, :mod:`.bench`, :mod:`.train`), each with ``execute(**flags)``.

The tools' modules one level up declare the commands and their flags and import nothing heavy; each
command imports its module here when it runs, so that ``--help`` and a wrong flag answer without loading
PyTorch, ONNX Runtime, PyAV or OpenVINO.
"""

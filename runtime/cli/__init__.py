"""The tools: every console script of the project, one module each, above the runtime core, the
exporter, the engine builder and training (nothing below imports this package):

- ``vsr-export`` (:mod:`.export`): write a model package;
- ``vsr-build-engine`` (:mod:`.build_engine`): build TensorRT engines for a package;
- ``vsr-run`` (:mod:`.run`): upscale files, streams and live runs, and the demo;
- ``vsr-parity`` (:mod:`.parity`): check a backend against the PyTorch reference;
- ``vsr-bench`` (:mod:`.bench`, timing in :mod:`.measure`): compare contenders side by side;
- ``vsr-train`` (:mod:`.train`): train or fine-tune a network with its original's recipe.

:mod:`.common` holds what they share: the flag groups (so a flag means the same in every tool), the
HxW and SHxSW parsers, and the handling of user errors.
"""

"""The console scripts of the runtime, one module each: ``vsr-run`` (:mod:`.run`), ``vsr-parity``
(:mod:`.parity`), ``vsr-bench`` (:mod:`.bench`); :mod:`.common` holds what every tool of this
project shares (flag groups, the HxW parser, the handling of user errors)."""

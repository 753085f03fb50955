"""The video runtime: decode, run a plan over chunks and tiles on a backend, encode."""

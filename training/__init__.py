"""Training and fine-tuning in PyTorch: each network's published recipe (:mod:`.recipe`), data and
degradations, the training loop (:mod:`.trainer`, DistributedDataParallel under torchrun) and
weights written in the official release layouts (:mod:`.checkpoints`); ``vsr-train`` is its tool."""

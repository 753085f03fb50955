"""Training and fine-tuning in PyTorch (not implemented yet; see README)."""

"""Training and evaluation of the flower classifier and the colorizer (PyTorch)."""

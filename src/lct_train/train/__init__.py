"""Training: rectified flow, the training loop, checkpoints, optimisation, metrics."""

"""Train state, jitted update steps, the training loop and checkpoints."""

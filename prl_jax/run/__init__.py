"""What every job (RL, SFT, evaluation, PRM training) shares: run context, batches, train state and
optimizers, checkpoints, the metrics file, the recorded config and the generic update machinery."""

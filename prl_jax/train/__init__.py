"""The RL loop, SFT, the models' losses, the frozen/trained PRM glue and the memory report."""

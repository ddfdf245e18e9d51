"""`prl-jax reproduce` and `prl-jax report`: presets, the pipeline of stages, the numbers gathered
from a workdir, the papers' claims checked against them, and the report."""

"""prl_jax: reinforcement learning of LLM reasoning with process rewards, in JAX.

PRIME, PRL/FRPO, ER-PRM and rePIRL beside the outcome-reward baselines, as pure jitted functions
over plain parameter pytrees. See docs/ and the package README for the map.

Importing the package keeps freed host memory mapped on a CPU backend (`prl_jax.host_memory`;
opt out with PRL_JAX_HOST_MALLOC=system): import it before running JAX computations.
"""

from prl_jax import host_memory

host_memory.keep_freed_memory()

__version__ = "0.1.0"

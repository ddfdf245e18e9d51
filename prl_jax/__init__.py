"""prl_jax: reinforcement learning of LLM reasoning with process rewards, in JAX.

PRIME, PRL/FRPO, ER-PRM and rePIRL beside the outcome-reward baselines, as pure jitted functions
over plain parameter pytrees. See docs/ and the package README for the map.
"""

__version__ = "0.1.0"

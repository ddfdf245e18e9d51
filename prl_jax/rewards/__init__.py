"""Reward functions: outcome verifiers and the process rewards of PRIME, PRL, ER-PRM and rePIRL."""

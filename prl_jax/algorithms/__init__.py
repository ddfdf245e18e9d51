"""Advantage estimators, policy losses, filters and the per-method recipes."""

"""The registry of methods: `method` config string -> `Recipe`.

Every module of this package that defines a method registers its recipes on import
(`recipes.register`); this module imports them all once, so adding a method is adding its file.
`recipes.py` itself imports nothing of the package, so no method file and the registry import
each other.
"""

from __future__ import annotations

import importlib
import pkgutil

from prl_jax import algorithms
from prl_jax.algorithms.recipes import Recipe, registered

# Discovery at import time (not lazily in get_recipe): a broken method file fails the first import.
for _module in pkgutil.iter_modules(algorithms.__path__):
  if _module.name != "registry":
    importlib.import_module(f"{algorithms.__name__}.{_module.name}")


def get_recipe(name: str) -> Recipe:
  """The recipe of a `method` config string."""
  recipes = registered()
  if name not in recipes:
    raise ValueError(f"Unknown method {name!r}; known methods: {sorted(recipes)}.")
  return recipes[name]

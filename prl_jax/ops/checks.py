"""Input checks shared by the pure math: shape errors as ValueError, concreteness tests."""

import contextlib

import jax


@contextlib.contextmanager
def shape_errors(fn_name: str):
  """Re-raises chex shape assertions as ValueError naming the function."""
  try:
    yield
  except AssertionError as err:
    raise ValueError(f"{fn_name}: bad input shapes: {err}") from None


def is_concrete(x) -> bool:
  """True outside tracing, where value checks (eta > 0, labels in [0, 1]) can run."""
  return not isinstance(x, jax.core.Tracer)

"""Test set-up: 8 simulated CPU devices and no network, fixed before jax is imported."""

import os

DEVICES = "--xla_force_host_platform_device_count=8"
# The default suite (-m "not slow") compiles with XLA's LLVM back end at -O0: its programs are
# tiny and mostly compiled once, so compile time dominates, and -O0 takes ~30% off its wall time
# (same HLO, same fusions, so the same arithmetic up to instruction selection; the tolerances
# already hold across CPUs). The slow tests train for hundreds of steps, where -O0's slower code
# costs more than it saves (the PRIME learning test: 75 s at the default level, 107 s at -O0),
# so a run that selects them keeps the default. Child processes that pop XLA_FLAGS run at the
# default level.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def pytest_configure(config):
  # Before any test module is imported, so before jax reads XLA_FLAGS.
  default_suite = config.option.markexpr.strip() == "not slow"
  flags = f"{DEVICES} {FAST_COMPILE}" if default_suite else DEVICES
  os.environ.setdefault("XLA_FLAGS", flags)


os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# With JAX_COMPILATION_CACHE_DIR set (the Makefile sets it), also keep programs that compile in
# 0.1 s or more (the default keeps only those over 1 s): most of this suite's programs are small,
# and many are compiled again by later tests and by the CLI runs of subprocess tests.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

# The files whose tests take longest (1-3 minutes each on 2 cores, `pytest --durations=30`) are
# collected first, longest first, so the two pytest workers of `make test` start them early
# instead of finishing on them one by one.
FIRST = ("test_train_loop.py", "test_learning.py", "test_prm_cadence.py", "test_lab_gates.py",
         "test_tracking.py", "test_nonfinite.py")


def pytest_collection_modifyitems(session, config, items):
  rank = lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST)
  items.sort(key=rank)  # stable: the order within each file and among the others is kept

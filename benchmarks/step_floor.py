"""The floor of the GRPO step on this machine: its matmul FLOPs at the rate XLA's CPU matmuls
reach here on the step's own matmul shapes.

    python benchmarks/step_floor.py [--peer-seconds 3.36]

The step (benchmarks/steps.py's GRPO shape: 16 prompts x 4 samples x 64 new tokens, prompts
trimmed to 12 positions and shared by their group's rows, one update, old log-probs from the
update's own forward) does, with N the matmul parameters of the mini model (4 layers x (4 d^2 +
3 d f) + the lm head d V; the embedding lookup is no matmul):

    decode     2 N x 64 rows x 63 steps   (the first token comes from the prefill)
    prefill    2 N x 16 prompts x 12 positions
    reference  2 N x (16 x 12 + 64 x 64) positions   (one forward)
    update     6 N x (16 x 12 + 64 x 64) positions   (forward + backward)

plus attention's score and value products (2 x 2 x T^2 x d per row and layer forward, T = 76;
under 2% here). Each term is divided by the rate measured for its shape: the MLP's up and down
projections (the largest matmuls) forward + backward at the update's rows, forward only at the
reference's rows, and forward at the decode's 64 rows, each the median of --repeats runs after a
warm-up. The sum is the time the step would take if every matmul ran at that rate and nothing
else cost anything: a floor for any implementation of the same math on XLA's CPU back end (ours
and Tunix's alike); only faster matmul kernels than XLA's would lower it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.docs_section import machine  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax import host_memory  # noqa: E402

PROMPTS, SAMPLES, NEW_TOKENS, PROMPT_LEN = 16, 4, 64, 12
ROWS = PROMPTS * SAMPLES
POSITIONS = PROMPTS * PROMPT_LEN + ROWS * NEW_TOKENS  # a pass's positions, prompts shared


def matmul_params(cfg) -> int:
  """N: parameters that take part in a matmul per position (attention q, k, v, o; the MLP's
  gate, up, down; the lm head)."""
  d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.resolved_head_dim
  attn = d * hd * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
  return cfg.num_layers * (attn + 3 * d * f) + d * cfg.vocab_size


def attention_flops(cfg, rows: int, width: int) -> int:
  """Attention's score and value products of one forward: 2 x 2 x width^2 x d per row and layer."""
  return 4 * width * width * cfg.hidden_size * cfg.num_layers * rows


def step_flops(cfg) -> dict[str, float]:
  """FLOPs of each part of the GRPO step (the module docstring's table)."""
  n = matmul_params(cfg)
  attention = attention_flops(cfg, ROWS, PROMPT_LEN + NEW_TOKENS)
  return {"decode": 2 * n * ROWS * (NEW_TOKENS - 1),
          "prefill": 2 * n * PROMPTS * PROMPT_LEN,
          "reference": 2 * n * POSITIONS + attention,
          "update": 6 * n * POSITIONS + 3 * attention}


def mlp_rate(rows: int, d: int, f: int, backward: bool, repeats: int) -> float:
  """GFLOP/s of x @ W_up -> silu -> @ W_down at `rows` rows (forward, or forward + backward)."""
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (rows, d))
  up = jax.random.normal(keys[1], (d, f)) / d**0.5
  down = jax.random.normal(keys[2], (f, d)) / f**0.5

  def forward(up, down):
    return jnp.sum(jax.nn.silu(x @ up) @ down)

  fn = jax.jit(jax.grad(forward, argnums=(0, 1)) if backward else forward)
  jax.block_until_ready(fn(up, down))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(up, down))
    times.append(time.perf_counter() - start)
  flops = 2 * 2 * rows * d * f * (3 if backward else 1)
  return flops / sorted(times)[len(times) // 2] / 1e9


def main(argv=None):
  host_memory.keep_for_model(preset("mini"))  # as `prl-jax` does for a run of it
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=21)
  parser.add_argument("--peer-seconds", type=float, default=None,
                      help="the peer's GRPO step time on this machine, to set the floor against")
  args = parser.parse_args(argv)
  cfg = preset("mini")
  d, f = cfg.hidden_size, cfg.intermediate_size
  rates = {"decode": mlp_rate(ROWS, d, f, False, args.repeats * 10),
           "prefill": mlp_rate(PROMPTS * PROMPT_LEN, d, f, False, args.repeats),
           "reference": mlp_rate(POSITIONS, d, f, False, args.repeats),
           "update": mlp_rate(POSITIONS, d, f, True, args.repeats)}
  flops = step_flops(cfg)
  info = machine()
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; jax {info['jax']} on {info['platform']}")
  print(f"N = {matmul_params(cfg) / 1e6:.2f}M matmul parameters; {POSITIONS} positions a pass")
  total = 0.0
  for part, count in flops.items():
    seconds = count / (rates[part] * 1e9)
    total += seconds
    print(f"  {part:<10} {count / 1e9:7.1f} GFLOP at {rates[part]:6.1f} GFLOP/s: {seconds:.3f} s")
  print(f"  floor      {sum(flops.values()) / 1e9:7.1f} GFLOP: {total:.3f} s")
  if args.peer_seconds:
    print(f"floor / peer's step: {total / args.peer_seconds:.2f}x "
          f"(the target is 0.5x: {0.5 * args.peer_seconds:.3f} s)")


if __name__ == "__main__":
  main()

"""Rollout throughput: the cached sampler against naive full recomputation.

    python benchmarks/sampler.py            # the figures in docs/benchmarks.md
    python benchmarks/sampler.py --quick    # fewer repetitions (a smoke run)
    python benchmarks/sampler.py --spread   # responses of spread lengths: early exit and
                                            # compact_rows (the "Decode early exit" section)
    python benchmarks/sampler.py --long-prompts   # 8 x 8 rows after 200-token prompts: what
                                                  # reading a group's prompt once saves
    XLA_FLAGS=--xla_force_host_platform_device_count=4 \
        python benchmarks/sampler.py --long-prompts --data-shards 4   # the same over 4 devices

Shapes (the Tunix comparison's): the "mini" preset (Llama architecture, vocab 512, d 256, 4 layers,
4 heads, head dim 64, MLP 1024) and its 2-KV-head variant; 64 prompts of 16 tokens, 128 new
tokens (KV cache 16 + 128 = 144 slots), temperature 1.0, no EOS (every row runs all 128 steps),
float32. Tokens/s = 64 * 128 / (wall time of one rollout: prefill + decode, results on host).

"naive" is what the cache avoids: a jitted loop of fixed shape that re-runs the whole
[64, 144] sequence through the model for every new token (no KV cache).

Each figure is the median of the timed runs after warm-up runs. The machine is printed; the
table is written into the "Sampler" section of docs/benchmarks.md with the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.docs_section import machine, write_section  # noqa: E402
from prl_jax import sharding  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax.models.transformer import Transformer, init_params  # noqa: E402
from prl_jax.sampling import SamplingConfig, sample  # noqa: E402
from prl_jax.token_choice import choose_tokens  # noqa: E402
from prl_jax import host_memory  # noqa: E402

BATCH, PROMPT_LEN, NEW_TOKENS = 64, 16, 128
# Tunix 0.1.7 on the same machine kind and shapes, measured separately (not here;
# benchmarks/side_by_side.py measures both in one run).
ANCHOR = {4: 3409.0, 2: 4777.0}
DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks.md")


def naive_rollout_fn(cfg, scfg: SamplingConfig):
  """A jitted rollout without cache: every step runs the full [B, P+N] sequence."""
  model = Transformer(cfg)
  width = PROMPT_LEN + NEW_TOKENS

  @jax.jit
  def rollout(params, prompts, key):
    tokens = jnp.zeros((BATCH, width), jnp.int32).at[:, :PROMPT_LEN].set(prompts)
    mask = jnp.arange(width)[None, :] < PROMPT_LEN
    mask = jnp.broadcast_to(mask, (BATCH, width))
    uniforms = jax.random.uniform(key, (NEW_TOKENS, BATCH))

    def step(t, carry):
      tokens, mask = carry
      logits, _ = model.apply(params, tokens, token_mask=mask)
      last = jax.lax.dynamic_index_in_dim(logits, PROMPT_LEN + t - 1, axis=1, keepdims=False)
      new, _ = choose_tokens(last, uniforms[t], scfg)
      tokens = jax.lax.dynamic_update_slice(tokens, new[:, None], (0, PROMPT_LEN + t))
      mask = jax.lax.dynamic_update_slice(mask, jnp.ones((BATCH, 1), bool), (0, PROMPT_LEN + t))
      return tokens, mask

    tokens, _ = jax.lax.fori_loop(0, NEW_TOKENS, step, (tokens, mask))
    return tokens[:, PROMPT_LEN:]

  return rollout


def time_runs(run, warmup: int, repeats: int) -> tuple[float, list[float], float]:
  """(median seconds, all timed seconds, seconds of the first call incl. compilation)."""
  start = time.perf_counter()
  run(0)
  first = time.perf_counter() - start
  for i in range(1, warmup):
    run(i)
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    run(warmup + i)
    times.append(time.perf_counter() - start)
  return float(np.median(times)), times, first


def bench_variant(kv_heads: int, args) -> dict:
  cfg = preset("mini", num_kv_heads=kv_heads)
  params = init_params(cfg, jax.random.key(0))
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (BATCH, PROMPT_LEN), 0,
                                          cfg.vocab_size), np.int32)
  scfg = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=1.0, eos_id=None,
                        attention_segments=args.segments)

  def ours(i):
    out = sample(params, cfg, prompts, jax.random.key(100 + i), scfg)
    np.asarray(out.tokens)  # results on host, as a trainer consumes them
    assert int(out.steps) == NEW_TOKENS

  median, times, first = time_runs(ours, args.warmup, args.repeats)
  row = {"kv": kv_heads, "params": cfg.num_params(), "ours_s": median, "ours_times": times,
         "ours_first": first}
  print(f"  ours  kv_heads={kv_heads}: median {median * 1e3:8.1f} ms "
        f"({BATCH * NEW_TOKENS / median:8.0f} tokens/s); runs "
        f"{', '.join(f'{t * 1e3:.0f}' for t in times)} ms; first call {first:.1f} s", flush=True)

  if args.naive_repeats > 0:
    naive = naive_rollout_fn(cfg, scfg)
    run = lambda i: np.asarray(naive(params, prompts, jax.random.key(200 + i)))
    n_median, n_times, n_first = time_runs(run, 1, args.naive_repeats)
    row.update(naive_s=n_median, naive_times=n_times)
    print(f"  naive kv_heads={kv_heads}: median {n_median * 1e3:8.1f} ms "
          f"({BATCH * NEW_TOKENS / n_median:8.0f} tokens/s); runs "
          f"{', '.join(f'{t:.1f}' for t in n_times)} s; first call {n_first:.1f} s", flush=True)
  return row


SPREAD_PROMPTS, SPREAD_N, SPREAD_EOS_IDS = 16, 4, 11


def bench_spread(args) -> dict:
  """16 prompts x 4 samples, 128 new tokens, where 11 of the 512 ids end a response: the random
  mini policy ends a row with probability ~1/47 per token, so lengths spread from a few tokens
  to the cap. Three samplers, runs alternating: no EOS (every row decodes 128 steps), EOS with
  the loop's early exit only (it stops at the longest row), and EOS with `compact_rows`."""
  cfg = preset("mini")
  params = init_params(cfg, jax.random.key(0))
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (SPREAD_PROMPTS, PROMPT_LEN), 0,
                                          cfg.vocab_size), np.int32)
  base = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=1.0, n=SPREAD_N,
                        attention_segments=args.segments,
                        eos_id=tuple(range(1, cfg.vocab_size, cfg.vocab_size // SPREAD_EOS_IDS
                                           + 1))[:SPREAD_EOS_IDS])
  variants = {"no EOS": base.replace(eos_id=None), "EOS, early exit": base,
              "EOS, compact_rows": base.replace(compact_rows=True)}
  times = {k: [] for k in variants}
  lengths = {k: [] for k in variants}
  for i in range(args.warmup + args.repeats):
    for name, scfg in variants.items():
      start = time.perf_counter()
      out = sample(params, cfg, prompts, jax.random.key(100 + i), scfg)
      rows = np.asarray(out.lengths)  # results on host, as a trainer consumes them
      if i >= args.warmup:
        times[name].append(time.perf_counter() - start)
        lengths[name].append(rows)
  result = {}
  for name in variants:
    median = float(np.median(times[name]))
    spread = np.concatenate(lengths[name])
    result[name] = {"seconds": median, "times": times[name], "mean_length": float(spread.mean()),
                    "max_length": int(spread.max()),
                    "tokens_per_s": float(spread.mean()) * len(lengths[name][0]) / median}
    print(f"  {name:18s} median {median * 1e3:7.1f} ms; mean length {spread.mean():5.1f}, "
          f"max {spread.max()}; {result[name]['tokens_per_s']:8.0f} response tokens/s; runs "
          f"{', '.join(f'{t * 1e3:.0f}' for t in times[name])} ms", flush=True)
  return result


LONG_PROMPTS, LONG_N, LONG_PROMPT_LEN, LONG_NEW = 8, 8, 200, 64


def bench_long_prompts(args) -> None:
  """8 prompts of 200 tokens (a 256-slot bucket) x 8 samples x 64 new tokens, no EOS: the
  prompt holds most of the KV cache a decode step reads, as few-shot prompts do in RL on real
  problems. Prints the median time of a rollout (tokens on host) and response tokens/s."""
  cfg = preset("mini")
  params = init_params(cfg, jax.random.key(0))
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (LONG_PROMPTS, LONG_PROMPT_LEN), 0,
                                          cfg.vocab_size), np.int32)
  scfg = SamplingConfig(max_new_tokens=LONG_NEW, temperature=1.0, n=LONG_N, eos_id=None,
                        attention_segments=args.segments)
  mesh = None
  if args.data_shards > 1:  # rows over a data-parallel mesh (simulated devices on a CPU)
    mesh = sharding.make_mesh(data=args.data_shards)
    params = jax.device_put(params, sharding.param_shardings(cfg, mesh))

  def run(i):
    np.asarray(sample(params, cfg, prompts, jax.random.key(100 + i), scfg, mesh=mesh).tokens)

  median, times, _ = time_runs(run, args.warmup, args.repeats)
  tokens_per_s = LONG_PROMPTS * LONG_N * LONG_NEW / median
  where = f" over {args.data_shards} data shards" if mesh else ""
  print(f"  {LONG_PROMPTS} prompts of {LONG_PROMPT_LEN} tokens x {LONG_N} samples x {LONG_NEW} "
        f"new tokens{where}: median {median * 1e3:.1f} ms ({tokens_per_s:,.0f} tokens/s); runs "
        f"{', '.join(f'{t * 1e3:.0f}' for t in times)} ms", flush=True)


def spread_table(result: dict) -> str:
  base = result["no EOS"]["seconds"]
  lines = ["| sampler | wall time (ms) | mean / max response length | response tokens/s | "
           "time vs no EOS |", "|---|---|---|---|---|"]
  for name, r in result.items():
    lines.append(f"| {name} | {r['seconds'] * 1e3:,.0f} | {r['mean_length']:.1f} / "
                 f"{r['max_length']} | {r['tokens_per_s']:,.0f} | {r['seconds'] / base:.2f}x |")
  return "\n".join(lines)


def write_spread_docs(result: dict, info: dict, args, command: str) -> None:
  paragraph = (
      f"The decode loop (`prl_jax.decode`) stops once every row has produced EOS, so a batch "
      f"costs as many steps as its longest response; with `SamplingConfig.compact_rows` the rows "
      f"still decoding also move to a smaller batch (a power of two) between response blocks "
      f"once at most half are left, so finished rows stop costing compute "
      f"(`decode.decode_compacting`; tests/test_decode_speed.py checks tokens, masks, lengths "
      f"and log-probs against the full batch). Here: the mini preset, {SPREAD_PROMPTS} prompts "
      f"x {SPREAD_N} samples x at most {NEW_TOKENS} new tokens, {args.segments} response blocks, "
      f"temperature 1, float32; {SPREAD_EOS_IDS} of the 512 ids end a response, so the random "
      f"policy's lengths spread from a few tokens to the cap (about geometric, mean ~45). Median "
      f"of {args.repeats} runs after {args.warmup} warm-up runs, the three samplers alternating; "
      "response tokens/s is the mean number of tokens up to each EOS per rollout over the median "
      f"time. 5-minute load average {os.getloadavg()[1]:.1f} on {os.cpu_count()} CPUs at the end "
      "(other jobs). The first rollout that needs a batch size compiles that size's block programs (at "
      "most blocks x log2(rows) of them), hence the warm-up runs.")
  after = (
      "With 64 rows of geometric lengths the longest row nearly always reaches the cap, so the "
      "loop's early exit alone saves nothing; moving the live rows to 32, 16, 8 rows between "
      "blocks does. `compact_rows` is off by default: each block boundary is a host sync and "
      "every (block, batch size) pair is its own compiled program, which pays once responses "
      "end at spread lengths (a trained policy's, not the random policy of the step benchmarks, "
      "whose rows all run to the cap), and on a mesh it is ignored (rows are sharded).")
  write_section("Decode early exit", [paragraph, spread_table(result), after], info, command)


def table(rows: list[dict]) -> str:
  lines = ["| model | params | ours (tokens/s) | naive (tokens/s) | ours / naive | "
           "Tunix 0.1.7 anchor (tokens/s) | ours / anchor |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    ours = BATCH * NEW_TOKENS / r["ours_s"]
    naive = BATCH * NEW_TOKENS / r["naive_s"] if "naive_s" in r else None
    lines.append(
        f"| mini, {r['kv']} KV heads | {r['params'] / 1e6:.2f}M | {ours:,.0f} | "
        f"{f'{naive:,.0f}' if naive else 'not run'} | "
        f"{f'{ours / naive:.1f}x' if naive else '-'} | {ANCHOR[r['kv']]:,.0f} | "
        f"{ours / ANCHOR[r['kv']]:.2f}x |")
  return "\n".join(lines)


def write_docs(rows: list[dict], info: dict, args, command: str) -> None:
  paragraph = (
      f"Rollout throughput of `prl_jax.sampling.sample` against naive full recomputation (no KV "
      f"cache, the whole sequence re-run per token, jitted with a fixed shape). {BATCH} prompts x "
      f"{PROMPT_LEN} tokens, {NEW_TOKENS} new tokens, KV cache {PROMPT_LEN + NEW_TOKENS} slots "
      f"({args.segments} attention segments), temperature 1.0, no EOS, float32. Tokens/s = "
      f"{BATCH} x {NEW_TOKENS} / wall time of one rollout (prefill + decode, tokens on host); "
      f"median of {args.repeats} runs after {args.warmup} warm-up runs (naive: median of "
      f"{args.naive_repeats} after 1). The anchor column is Tunix 0.1.7 as measured in "
      "a separate measurement, not re-measured here.")
  write_section("Sampler", [paragraph, table(rows)], info, command)


def main(argv=None):
  host_memory.keep_for_model(preset("mini"))  # as `prl-jax` does for a run of it
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="3 timed runs after 1 warm-up, 1 naive run; docs not written")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--naive-repeats", type=int, default=5)
  parser.add_argument("--segments", type=int, default=SamplingConfig.attention_segments)
  parser.add_argument("--kv-heads", type=int, nargs="+", default=[4, 2])
  parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
  parser.add_argument("--spread", action="store_true",
                      help="only the spread-length case (early exit, compact_rows)")
  parser.add_argument("--long-prompts", action="store_true",
                      help="only the long-prompt case (8 x 200-token prompts, 8 samples each); "
                           "prints, never writes the docs")
  parser.add_argument("--data-shards", type=int, default=1,
                      help="with --long-prompts: rows over a data mesh of this many devices (on "
                           "a CPU, simulate them with XLA_FLAGS="
                           "--xla_force_host_platform_device_count=K)")
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats, args.warmup, args.naive_repeats = 3, 1, 1

  info = machine()
  command = "python benchmarks/sampler.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
  if args.long_prompts:
    bench_long_prompts(args)
    return
  if args.spread:
    result = bench_spread(args)
    print(spread_table(result))
    if not (args.quick or args.no_docs):
      write_spread_docs(result, info, args, command)
    return
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; platform {info['platform']}, "
        f"{info['devices']} device(s); jax {info['jax']}")
  print(f"shapes: mini preset (vocab 512, d 256, 4 layers, 4 heads, head dim 64, MLP 1024), "
        f"KV heads {args.kv_heads}; batch {BATCH}, prompt {PROMPT_LEN}, new tokens {NEW_TOKENS}, "
        f"cache {PROMPT_LEN + NEW_TOKENS}, segments {args.segments}, temperature 1.0, no EOS, "
        f"float32")
  print(f"timing: median of {args.repeats} after {args.warmup} warm-up; naive median of "
        f"{args.naive_repeats} after 1", flush=True)
  rows = [bench_variant(kv, args) for kv in args.kv_heads]
  print(table(rows))
  if not (args.quick or args.no_docs):
    write_docs(rows, info, args, command)


if __name__ == "__main__":
  main()

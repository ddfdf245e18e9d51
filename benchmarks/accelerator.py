"""The accelerator path: train-step MFU and decode tokens/s against the HBM-bandwidth bound.

    python benchmarks/accelerator.py                      # on a GPU/TPU: Qwen2.5-0.5B shapes
    python benchmarks/accelerator.py --smoke              # any backend: mini preset, tiny shapes

The model is the named preset with random weights (nothing downloaded), bfloat16 compute with
float32 master weights (`ModelConfig.dtype`), attention through `jax.nn.dot_product_attention`
(`attention_impl="fused"`: cuDNN's fused kernel on NVIDIA GPUs).

- train step: next-token loss on `--batch` x `--seq` random tokens, backward, AdamW, jitted with
  the state donated. MFU = 6 x params x tokens / step time / peak (the 6N rule of thumb; it leaves
  out attention's T^2 FLOPs, so it slightly understates the work done).
- decode: `prl_jax.sampling.sample` of `--new-tokens` tokens after `--prompt` tokens for
  `--decode-batch` rows, no EOS. Per-token decode time = (t(N new) - t(1 new)) / (N - 1), which
  leaves the prefill out. Bound: every step reads all parameters (compute dtype) and the KV cache
  filled so far (on average prompt + N/2 slots), so step time >= bytes / HBM bandwidth.

Peak FLOP/s and bandwidth come from the device kind (dense bf16, public spec sheets) or from
`--peak-tflops` / `--hbm-gbps`; on a CPU there is no peak and only achieved figures print.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.docs_section import machine, write_section  # noqa: E402
from benchmarks.steps import median_time  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax.models.transformer import attend_fused, init_params  # noqa: E402
from prl_jax.run import updates  # noqa: E402
from prl_jax.run.batch import SequenceBatch  # noqa: E402
from prl_jax.run.state import ModelState, adamw  # noqa: E402
from prl_jax.sampling import SamplingConfig, sample  # noqa: E402
from prl_jax.train import objectives  # noqa: E402

# device kind -> (dense bf16 FLOP/s, HBM bytes/s), from the vendors' published specifications.
PEAKS = {
    "NVIDIA H200": (989e12, 4.8e12),
    "NVIDIA H100 80GB HBM3": (989e12, 3.35e12),
    "NVIDIA A100-SXM4-80GB": (312e12, 2.04e12),
    "NVIDIA A100-SXM4-40GB": (312e12, 1.555e12),
    "TPU v4": (275e12, 1.2e12),
    "TPU v5 lite": (197e12, 0.819e12),
    "TPU v5p": (459e12, 2.765e12),
    "TPU v6 lite": (918e12, 1.64e12),
}


def timed(fn, warmup: int, repeats: int) -> float:
  """Median seconds of `fn()` (which blocks on its result) after `warmup` calls."""
  return median_time(fn, warmup, repeats)[0]


def train_step_seconds(cfg, batch: int, seq: int, chunk: int, repeats: int) -> float:
  params = init_params(cfg, jax.random.key(0))
  tx = adamw(1e-5, grad_clip=1.0)
  holder = {"state": ModelState(params, tx.init(params))}
  tokens = jax.random.randint(jax.random.key(1), (batch, seq), 3, cfg.vocab_size)
  data = SequenceBatch(tokens=tokens, token_mask=jnp.ones(tokens.shape, bool),
                       response_mask=jnp.ones((batch, seq - 1), jnp.float32), prompt_len=1)
  loss_fn = objectives.sft_loss_fn(cfg, chunk)  # chunked logits: a 152k vocabulary fits
  step = jax.jit(lambda s, b: updates.minibatch_updates(s, tx, loss_fn, b, 1, 1),
                 donate_argnums=0)

  def run():
    holder["state"], metrics = step(holder["state"], data)
    float(metrics["loss"])

  return timed(run, 2, repeats)


def attention_layer_seconds(cfg, batch: int, seq: int, repeats: int) -> dict:
  """Forward + backward of one attention layer's core at the train shapes, as the model runs it
  (`fused`: cuDNN on an NVIDIA GPU in 16-bit) and through XLA's composition with a padding mask
  broadcast over the queries ([B, 1, 1, S], the form cuDNN refuses)."""
  ks = jax.random.split(jax.random.key(3), 3)
  hd, dtype = cfg.resolved_head_dim, jnp.dtype(cfg.dtype)
  q = jax.random.normal(ks[0], (batch, seq, cfg.num_heads, hd), dtype)
  k, v = (jax.random.normal(key, (batch, seq, cfg.num_kv_heads, hd), dtype) for key in ks[1:])
  valid = jnp.ones((batch, seq), bool)
  forms = {"fused": lambda q, k, v: attend_fused(q, k, v, valid),
           "xla": lambda q, k, v: jax.nn.dot_product_attention(
               q, k, v, mask=valid[:, None, None, :], is_causal=True, implementation="xla")}
  seconds = {}
  for name, attend in forms.items():
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32)),
                            argnums=(0, 1, 2)))
    seconds[name] = timed(lambda: jax.block_until_ready(grad(q, k, v)), 2, repeats)
  return seconds


def decode_seconds_per_step(cfg, rows: int, prompt: int, new: int, repeats: int) -> float:
  params = init_params(cfg, jax.random.key(0))
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (rows, prompt), 3, cfg.vocab_size))

  def run_with(n):
    scfg = SamplingConfig(max_new_tokens=n, temperature=1.0, eos_id=None)
    return lambda: np.asarray(sample(params, cfg, prompts, jax.random.key(2), scfg).tokens)

  return (timed(run_with(new), 1, repeats) - timed(run_with(1), 1, repeats)) / (new - 1)


def decode_bound_seconds(cfg, rows: int, prompt: int, new: int, bandwidth: float) -> float:
  """Bytes one decode step must read (params + the mean filled KV cache) / bandwidth."""
  size = jnp.dtype(cfg.dtype).itemsize
  kv = 2 * cfg.num_layers * rows * (prompt + new / 2) * cfg.num_kv_heads * cfg.resolved_head_dim
  return (cfg.num_params() + kv) * size / bandwidth


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--smoke", action="store_true",
                      help="the mini preset at tiny shapes (a CPU check that it all runs)")
  parser.add_argument("--preset", default="qwen2.5-0.5b")
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=1024)
  parser.add_argument("--remat", default="dots_no_batch")
  parser.add_argument("--logprob-chunk", type=int, default=256,
                      help="positions projected onto the vocabulary at a time (0: all)")
  parser.add_argument("--decode-batch", type=int, default=64)
  parser.add_argument("--prompt", type=int, default=128)
  parser.add_argument("--new-tokens", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--peak-tflops", type=float, help="peak dense FLOP/s of the device / 1e12")
  parser.add_argument("--hbm-gbps", type=float, help="HBM bandwidth of the device in GB/s")
  parser.add_argument("--write-docs", action="store_true")
  args = parser.parse_args(argv)
  if args.smoke:
    args.preset, args.batch, args.seq, args.remat, args.logprob_chunk = "mini", 4, 64, "none", 0
    args.decode_batch, args.prompt, args.new_tokens, args.repeats = 4, 16, 16, 2
  info = machine()
  kind = jax.devices()[0].device_kind
  peak, bandwidth = PEAKS.get(kind, (None, None))
  peak = args.peak_tflops * 1e12 if args.peak_tflops else peak
  bandwidth = args.hbm_gbps * 1e9 if args.hbm_gbps else bandwidth
  cfg = preset(args.preset, dtype=args.dtype, remat=args.remat, attention_impl="fused")
  n = cfg.num_params()
  print(f"device: {kind} ({info['platform']}); {args.preset}, {n / 1e6:.1f}M params, "
        f"{args.dtype}", flush=True)

  attention = attention_layer_seconds(cfg, args.batch, args.seq, args.repeats)
  print(f"one attention layer, forward + backward, {args.batch} x {args.seq}: as the model runs "
        f"it {1e3 * attention['fused']:.2f} ms, XLA's composition {1e3 * attention['xla']:.2f} "
        "ms", flush=True)
  step_s = train_step_seconds(cfg, args.batch, args.seq, args.logprob_chunk, args.repeats)
  flops = 6 * n * args.batch * args.seq / step_s
  mfu = f"{100 * flops / peak:.1f}%" if peak else "- (no peak known)"
  print(f"train step {args.batch} x {args.seq}: {step_s:.3f} s, {flops / 1e12:.3f} TFLOP/s "
        f"by 6N, MFU {mfu}", flush=True)

  decode_s = decode_seconds_per_step(cfg, args.decode_batch, args.prompt, args.new_tokens,
                                     args.repeats)
  tokens_s = args.decode_batch / decode_s
  bound_s = (decode_bound_seconds(cfg, args.decode_batch, args.prompt, args.new_tokens,
                                  bandwidth) if bandwidth else None)
  bound = f"{args.decode_batch / bound_s:,.0f}" if bound_s else "-"
  ratio = f"{decode_s / bound_s:.2f}x" if bound_s else "-"
  print(f"decode {args.decode_batch} rows, {args.prompt} + {args.new_tokens}: {tokens_s:,.0f} "
        f"tokens/s; HBM bound {bound} tokens/s; step time / bound {ratio}", flush=True)

  if args.write_docs:
    table = "\n".join([
        "| device | model | train step | MFU (6N) | decode tokens/s | HBM bound tokens/s | "
        "decode time / bound |", "|---|---|---|---|---|---|---|",
        f"| {kind} | {args.preset} ({n / 1e6:.0f}M), {args.dtype} | {args.batch} x {args.seq}: "
        f"{step_s:.3f} s | {mfu} | {tokens_s:,.0f} | {bound} | {ratio} |"])
    command = "python benchmarks/accelerator.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv)
    write_section(f"Accelerator: {kind}", [__doc__.split("\n")[0], table], info, command)


if __name__ == "__main__":
  main()

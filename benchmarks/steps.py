"""Step times: one SFT train step, one GRPO step and one PRIME step, against the Tunix anchor.

    python benchmarks/steps.py            # the figures in docs/benchmarks.md
    python benchmarks/steps.py --quick    # fewer repetitions (a smoke run); docs not written

Shapes (the Tunix comparison's): the "mini" preset (Llama architecture, vocab 512, d 256, 4 layers,
4 heads, 4 KV heads, head dim 64, MLP 1024, 4.46M parameters), float32, one device.

- train step: a batch of 32 random sequences of 128 tokens, next-token loss on every token after
  the first, one AdamW update (`train.objectives.sft_loss_fn` + `run.updates.minibatch_updates`, jitted, donated).
- RL step: `train.loop.rl_step` end to end: 16 arithmetic prompts x 4 samples x at most 64 new
  tokens at temperature 1 (a random policy: rows end only at a sampled EOS), outcome check,
  old-policy and reference log-probs, advantages, one AdamW update over the whole batch. GRPO
  computes the reference log-probs for a KL loss (kl_coef 0.04, as Tunix's GRPO does); PRIME adds
  the PRM's log-probs and the PRM update. The character tokenizer's alphabet is padded to 512
  symbols so the model has the anchor's vocabulary.

Each figure is the median of the timed runs after warm-up runs (which include compilation).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.docs_section import machine, write_section  # noqa: E402
from prl_jax.algorithms.registry import get_recipe  # noqa: E402
from prl_jax.config import apply_overrides, load_config_file  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax.models.tokenizer import CharTokenizer  # noqa: E402
from prl_jax.models.transformer import init_params  # noqa: E402
from prl_jax.run import updates  # noqa: E402
from prl_jax.train import objectives  # noqa: E402
from prl_jax.run.batch import SequenceBatch  # noqa: E402
from prl_jax.run.state import init_state  # noqa: E402
from prl_jax.train.loop import PromptStream, build_functions, rl_step  # noqa: E402
from prl_jax.run.context import build_context  # noqa: E402
from prl_jax.run.state import ModelState, adamw  # noqa: E402
from prl_jax import host_memory  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
TRAIN_BATCH, TRAIN_LEN = 32, 128
PROMPTS, SAMPLES, NEW_TOKENS = 16, 4, 64
# Tunix 0.1.7 on the same machine kind and shapes, measured separately (not here;
# benchmarks/side_by_side.py measures both in one run).
ANCHOR = {"train": 1.23, "grpo": 2.73}
TARGET = {"train": 1.23, "grpo": 1.4, "prime": 2.73}


def median_time(run, warmup: int, repeats: int) -> tuple[float, list[float]]:
  for _ in range(warmup):
    run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), times


def bench_train_step(warmup: int, repeats: int) -> dict:
  cfg = preset("mini")
  params = init_params(cfg, jax.random.key(0))
  tx = adamw(1e-4, grad_clip=1.0)
  state = ModelState(params, tx.init(params))
  tokens = jax.random.randint(jax.random.key(1), (TRAIN_BATCH, TRAIN_LEN), 3, cfg.vocab_size)
  batch = SequenceBatch(tokens=tokens, token_mask=jnp.ones(tokens.shape, bool),
                        response_mask=jnp.ones((TRAIN_BATCH, TRAIN_LEN - 1), jnp.float32),
                        prompt_len=1)
  loss_fn = objectives.sft_loss_fn(cfg)
  update = jax.jit(lambda s, b: updates.minibatch_updates(s, tx, loss_fn, b, 1, 1),
                   donate_argnums=0)
  holder = {"state": state}

  def run():
    holder["state"], metrics = update(holder["state"], batch)
    float(metrics["loss"])  # wait for the step, as a loop logging its loss does

  median, times = median_time(run, warmup, repeats)
  return {"name": "train", "seconds": median, "times": times,
          "tokens_per_s": TRAIN_BATCH * TRAIN_LEN / median}


OLD_LOGP_WORDS = {"forward": "a forward pass before the update",
                  "auto": "the update's own forward (one update per step)",
                  "sampler": "the sampler's"}


def _rl_config(method: str, workdir: str, old_logp: str = "auto", extra: tuple = ()):
  config = load_config_file(os.path.join(ROOT, "configs", "base.py"))
  apply_overrides(config, [
      f"method={method}", "model.preset=mini", "rollout.prompts_per_step=16", "rollout.n=4",
      f"rollout.max_new_tokens={NEW_TOKENS}", "rollout.temperature=1.0", "train.ppo_epochs=1",
      "train.mini_batch_size=0", "log.progress=False", "log.tensorboard=False",
      "mesh.num_devices=1", "task.max_ops=2", f"train.old_logp_source={old_logp}"])
  if method == "grpo":
    apply_overrides(config, ["algo.loss.kl_coef=0.04"])
  apply_overrides(config, list(extra))
  return config


def rl_step_runner(method: str, old_logp: str = "auto", extra: tuple = (), model: str = "mini"):
  """(run, holder): run() does one `rl_step`; holder["metrics"] collects each step's metrics.
  `old_logp` is train.old_logp_source ("forward": a pass before the update; "auto": here, with
  one update per step, the update's own forward; "sampler": the rollout's); `extra` more config
  overrides; `model` a preset with the mini preset's vocabulary of 512 (mini, lab)."""
  workdir = tempfile.mkdtemp(prefix=f"bench-{method}-")
  config = _rl_config(method, workdir, old_logp, extra)
  ctx = build_context(config, workdir)
  extra = "".join(chr(0x100 + i) for i in range(512 - ctx.tokenizer.vocab_size))
  ctx.tokenizer = CharTokenizer(CharTokenizer.DEFAULT_ALPHABET + extra)
  ctx.model_cfg = preset(model)
  if ctx.model_cfg.vocab_size != 512:
    raise ValueError(f"rl_step_runner: the {model} preset's vocabulary is not 512.")
  ctx.sampling = ctx.sampling.replace(eos_id=ctx.tokenizer.eos_id)
  recipe = get_recipe(method)
  fns = build_functions(ctx, recipe)
  holder = {"state": ctx.place_state(init_state(ctx, recipe)), "metrics": []}
  stream = PromptStream(ctx.train_examples, config.seed)

  def run():
    holder["state"], metrics = rl_step(ctx, recipe, fns, holder["state"], stream)
    holder["metrics"].append(metrics)

  return run, holder


def _rl_row(method, old_logp, times, timed_metrics) -> dict:
  median = float(np.median(times))
  rollout = float(np.median([m["time/rollout_s"] for m in timed_metrics]))
  tokens = float(np.median([m["rollout/tokens"] for m in timed_metrics]))
  return {"name": method, "old_logp": old_logp, "seconds": median, "times": times,
          "rollout_s": rollout, "rest_s": median - rollout, "sampled_tokens": tokens}


def bench_rl_step(method: str, warmup: int, repeats: int, old_logp: str = "auto") -> dict:
  run, holder = rl_step_runner(method, old_logp)
  _, times = median_time(run, warmup, repeats)
  return _rl_row(method, old_logp, times, holder["metrics"][warmup:])


def bench_old_logp_ab(method: str, warmup: int, repeats: int) -> list[dict]:
  """The step with old log-probs from a forward pass, from the update's own forward (auto) and
  from the sampler, runs alternating (A, B, C, A, ...) so changing machine load hits all alike."""
  runners = {source: rl_step_runner(method, source) for source in ("forward", "auto", "sampler")}
  times = {source: [] for source in runners}
  for i in range(warmup + repeats):
    for source, (run, _) in runners.items():
      start = time.perf_counter()
      run()
      if i >= warmup:
        times[source].append(time.perf_counter() - start)
  return [_rl_row(method, source, times[source], holder["metrics"][warmup:])
          for source, (_, holder) in runners.items()]


def table(rows: list[dict]) -> str:
  lines = ["| step | ours (s) | of which rollout (s) | Tunix 0.1.7 anchor (s) | target (s) | "
           "ours / anchor |", "|---|---|---|---|---|---|"]
  labels = {"train": f"train step, {TRAIN_BATCH} x {TRAIN_LEN} tokens",
            "grpo": f"GRPO step, {PROMPTS} x {SAMPLES} x {NEW_TOKENS} new tokens",
            "prime": f"PRIME step, {PROMPTS} x {SAMPLES} x {NEW_TOKENS} new tokens"}
  for r in rows:
    ours = f"{r['seconds']:.3f}"
    if "tokens_per_s" in r:
      ours += f" ({r['tokens_per_s']:,.0f} tokens/s)"
    rollout = f"{r['rollout_s']:.3f}" if "rollout_s" in r else "-"
    anchor = ANCHOR.get(r["name"])
    ratio = f"{r['seconds'] / anchor:.2f}x" if anchor else "-"
    lines.append(f"| {labels[r['name']]} | {ours} | {rollout} | {anchor or '-'} | "
                 f"<= {TARGET[r['name']]} | {ratio} |")
  return "\n".join(lines)


def verdict(rows: list[dict]) -> str:
  """Which steps meet the performance targets, in words."""
  missed = [f"{r['name']} {r['seconds']:.2f} s > {TARGET[r['name']]} s" for r in rows
            if r["seconds"] > TARGET[r["name"]]]
  if not missed:
    return "Every step meets its target."
  return ("Targets missed: " + "; ".join(missed) + ". In the RL steps the update and the log-prob "
          "passes take most of the time, not the rollout.")


def write_docs(rows: list[dict], info: dict, args, command: str) -> None:
  paragraph = (
      f"Wall time of one step with the \"mini\" preset (vocab 512, d 256, 4 layers, 4 heads, 4 KV "
      f"heads, MLP 1024; 4.46M parameters), float32, one device; median of {args.repeats} runs "
      f"after {args.warmup} warm-up runs. The train step is {TRAIN_BATCH} random sequences of "
      f"{TRAIN_LEN} tokens, next-token loss, one AdamW update. An RL step is `rl_step` end to "
      f"end: {PROMPTS} arithmetic prompts x {SAMPLES} samples x at most {NEW_TOKENS} new tokens "
      "from a random policy, outcome check, old-policy and reference log-probs, advantages and "
      "one AdamW update (GRPO with a KL loss; PRIME adds the PRM log-probs and its update); "
      f"old-policy log-probs: {OLD_LOGP_WORDS[args.old_logp]}. "
      "The anchor is a separate Tunix measurement, not re-measured here.")
  write_section("Train and RL steps", [paragraph, table(rows), verdict(rows)], info, command)


def main(argv=None):
  host_memory.keep_for_model(preset("mini"))  # as `prl-jax` does for a run of it
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="2 timed runs after 1 warm-up; docs not written")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", nargs="+", default=["train", "grpo", "prime"],
                      choices=["train", "grpo", "prime"])
  parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
  parser.add_argument("--old-logp", choices=list(OLD_LOGP_WORDS), default="auto",
                      help="train.old_logp_source of the RL steps")
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats, args.warmup = 2, 1
  info = machine()
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; platform {info['platform']}, "
        f"{info['devices']} device(s); jax {info['jax']}", flush=True)
  rows = []
  for name in args.steps:
    row = (bench_train_step(args.warmup, args.repeats) if name == "train"
           else bench_rl_step(name, args.warmup, args.repeats, args.old_logp))
    rows.append(row)
    print(f"  {name}: median {row['seconds']:.3f} s; runs "
          f"{', '.join(f'{t:.3f}' for t in row['times'])}"
          + (f"; rollout {row['rollout_s']:.3f} s, {row['sampled_tokens']:.0f} tokens sampled"
             if "rollout_s" in row else f"; {row['tokens_per_s']:,.0f} tokens/s"), flush=True)
  print(table(rows))
  if not (args.quick or args.no_docs):
    command = "python benchmarks/steps.py" + ("" if argv is None and len(sys.argv) == 1 else
                                               " " + " ".join(sys.argv[1:] if argv is None
                                                              else argv))
    write_docs(rows, info, args, command)


if __name__ == "__main__":
  main()

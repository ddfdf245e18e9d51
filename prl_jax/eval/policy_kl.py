"""How far a trained policy moved from the policy it started from: KL on its own samples.

    KL(pi || pi_0) = E_{y ~ pi(.|x)} [ sum_t log pi(y_t | x, y_<t) - log pi_0(y_t | x, y_<t) ]

estimated by Monte Carlo over n samples of pi per prompt (temperature 1: the expectation is under
pi itself), both log-probabilities teacher-forced on the sampled tokens (EOS included). The mean
of the per-sequence sums is unbiased; the per-token figure divides by the mean response length.
Reported with the standard error over prompts (samples of one prompt are not independent of its
difficulty, prompts are). The same pass gives pi's token entropy on its own samples.

    run_policy_kl(config, "runs/x", model_dir="runs/x/final_hf", reference_dir="runs/sft/final_hf",
                  num_problems=64, out_path="runs/x/kl_init.json")
"""

from __future__ import annotations

import json

import jax
import numpy as np

from prl_jax.eval.evaluate import load_policy, prompt_ids
from prl_jax.models.logprobs import response_logprobs
from prl_jax.run import paths
from prl_jax.run.batch import make_sequences
from prl_jax.run.context import build_context
from prl_jax.sampling import SamplingConfig, sample_in_calls

KL_FILE = "kl_init.json"


def sequence_kl(logp: np.ndarray, ref_logp: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Per row, sum_t mask_t (logp_t - ref_logp_t): one sample's KL estimate ([B, N] -> [B])."""
  return np.sum((np.asarray(logp) - np.asarray(ref_logp)) * mask, axis=1)


def summarize_kl(per_sequence: np.ndarray, entropy_sum: np.ndarray, lengths: np.ndarray,
                 n: int) -> dict:
  """Mean KL per sequence and per token, token entropy, and the standard error over prompts.

  Rows are grouped n per prompt: se = std(prompt means, ddof=1) / sqrt(prompts).
  """
  per_prompt = per_sequence.reshape(-1, n).mean(axis=1)
  prompts = per_prompt.size
  se = float(np.std(per_prompt, ddof=1) / np.sqrt(prompts)) if prompts > 1 else None
  tokens = float(np.sum(lengths))
  return {"kl_seq": float(per_sequence.mean()), "kl_seq_se": se,
          "kl_token": float(per_sequence.sum() / max(tokens, 1.0)),
          "entropy_token": float(entropy_sum.sum() / max(tokens, 1.0)),
          "mean_length": float(np.mean(lengths)), "samples": int(per_sequence.size),
          "problems": int(prompts)}


def policy_kl(policy, reference, examples, tokenizer, *, n: int, max_new_tokens: int, seed: int,
              batch_prompts: int = 32) -> dict:
  """KL(policy || reference) on n samples of `policy` per example (see the module docstring)."""
  prompts = [prompt_ids(tokenizer, ex["prompt"]) for ex in examples]
  pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
  scfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, eos_id=tokenizer.eos_id,
                        pad_id=pad_id, n=n)
  chunk = min(batch_prompts, len(prompts))
  calls = [prompts[i:i + chunk] for i in range(0, len(prompts), chunk)]
  parts = sample_in_calls(policy.params, policy.model_cfg, calls, jax.random.key(seed), scfg,
                          pad_to=[chunk] * len(calls))
  prompt_len = max(len(p) for p in prompts)
  score = jax.jit(lambda params, cfg_tokens, mask, cfg: response_logprobs(
      cfg, params, cfg_tokens, mask, prompt_len, with_entropy=True), static_argnums=3)
  kls, entropies, lengths = [], [], []
  for call, part in zip(calls, parts):
    responses = [row[m].tolist() for row, m in zip(part.tokens, part.mask)]
    rows = [p for p in call for _ in range(n)]
    seq = make_sequences(rows, responses, prompt_len, max_new_tokens, pad_id)
    logp, entropy = score(policy.params, seq.tokens, seq.token_mask, policy.model_cfg)
    ref_logp, _ = score(reference.params, seq.tokens, seq.token_mask, reference.model_cfg)
    mask = seq.response_mask
    kls.append(sequence_kl(logp, ref_logp, mask))
    entropies.append(np.sum(np.asarray(entropy) * mask, axis=1))
    lengths.append(mask.sum(axis=1))
  return summarize_kl(np.concatenate(kls), np.concatenate(entropies), np.concatenate(lengths), n)


def run_policy_kl(config, workdir: str, *, model_dir: str, reference_dir: str, num_problems: int,
                  out_path: str) -> dict:
  """KL of `model_dir` to `reference_dir` on the first `num_problems` eval problems, eval.n
  samples each with rollout.max_new_tokens and seed config.seed; written to `out_path`."""
  ctx = build_context(config, workdir)
  policy = load_policy(ctx, model_dir)
  reference = load_policy(ctx, reference_dir)
  examples = ctx.eval_examples[:num_problems]
  out = policy_kl(policy, reference, examples, policy.tokenizer, n=config.eval.n,
                  max_new_tokens=config.rollout.max_new_tokens, seed=config.seed)
  out.update(model=model_dir, reference=reference_dir)
  paths.write_text(out_path, json.dumps(out, indent=1, sort_keys=True))
  if hasattr(ctx.verifier, "close"):
    ctx.verifier.close()
  return out

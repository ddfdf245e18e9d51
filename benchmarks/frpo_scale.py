"""How large FRPO's KL-to-go term is next to the GRPO advantage, per candidate eta.

    python benchmarks/frpo_scale.py --sft runs/lab/sft/final_hf --policy DIR \
        [--config configs/lab/frpo.py] [--etas 1,2,5,10,20,50,100] [--prompts 128] [--seed 0]

FRPO's advantage (docs/algorithms.md, FRPO (PRL v2)) is the GRPO advantage minus a KL term,

    A_t = GRPO(r_o)_b - G_t / eta,     G_t = sum_{j >= t} log(pi_old / pi_ref)(y_j)

with pi_ref the SFT policy (`--sft`) and pi_old the policy that samples (`--policy`). On
`--prompts` problems of the config's eval split (the validation split: never trained on), pi_old
samples rollout.n responses per problem at the rollout temperature; groups outside the config's
accuracy band are dropped as training would drop them. For every eta the script prints, over the
valid response tokens,

    ratio(eta) = std(G_t / eta) / std(GRPO advantage)

and the share of tokens whose FRPO advantage has the opposite sign of their GRPO advantage. The
KL-to-go measures the drift from pi_ref, so at FRPO's first step (pi_old = pi_ref) it is zero:
pass as `--policy` a policy that has trained, e.g. the lab GRPO control's export or checkpoint
(WORKDIR/final_hf with checkpoint.save_hf=true, or WORKDIR/checkpoints[/STEP]); GRPO is FRPO at
eta -> inf, so its drift is the most FRPO's term can see. Without `--policy` the SFT samples and
every ratio is 0.

The math is the library's (`advantages.grpo`, `kl_to_go.kl_to_go`, `advantages.prl`); this file
only samples, scores and tabulates.
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import numpy as np

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.filters import accuracy_filter
from prl_jax.config import apply_overrides, load_config_file
from prl_jax.eval.evaluate import load_policy
from prl_jax.models.logprobs import response_logprobs
from prl_jax.rewards.kl_to_go import kl_to_go
from prl_jax.run.batch import make_sequences
from prl_jax.run.context import build_context
from prl_jax.train.rollouts import sample_rows

DEFAULT_ETAS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def _masked_std(x: np.ndarray, mask: np.ndarray) -> float:
  """Population std of x over the entries where mask > 0 (0 when there are none)."""
  values = np.asarray(x, np.float64)[np.asarray(mask) > 0]
  return float(values.std()) if values.size else 0.0


def scale_table(outcome, old_logp, ref_logp, mask, group_size: int,
                etas=DEFAULT_ETAS) -> list[dict]:
  """Per eta: std(G / eta) / std(A_grpo) over valid tokens, and the share of valid tokens whose
  FRPO advantage (`advantages.prl`, every token a step) has the opposite sign of A_grpo.

  The ratio is inf when every group is tied (A_grpo = 0 everywhere).
  """
  mask = np.asarray(mask, np.float32)
  grpo = np.asarray(adv.grpo(outcome, group_size))[:, None] * mask
  kl = np.asarray(kl_to_go(old_logp, ref_logp, mask))
  grpo_std, kl_std = _masked_std(grpo, mask), _masked_std(kl, mask)
  valid = mask > 0
  rows = []
  for eta in etas:
    frpo = np.asarray(adv.prl(outcome, old_logp, ref_logp, mask, None, group_size, eta=eta))
    flipped = np.sign(frpo[valid]) * np.sign(grpo[valid]) < 0
    rows.append({"eta": float(eta), "kl_term_std": kl_std / eta, "grpo_std": grpo_std,
                 "ratio": kl_std / eta / grpo_std if grpo_std > 0 else float("inf"),
                 "sign_flips": float(flipped.mean()) if flipped.size else 0.0})
  return rows


def sample_batch(config, sft_dir: str, policy_dir: str | None, prompts: int, seed: int) -> dict:
  """rollout.n samples of pi_old on the first `prompts` eval problems, with their outcomes and
  the log-probs under pi_old and pi_ref; groups outside the accuracy band dropped."""
  with tempfile.TemporaryDirectory() as workdir:
    ctx = build_context(config, workdir)
    ref = load_policy(ctx, sft_dir)
    old = load_policy(ctx, policy_dir) if policy_dir else ref
    n = config.rollout.n
    examples = ctx.eval_examples[:prompts]
    prompt_ids = [ctx.tokenizer.encode(ex["prompt"]) for ex in examples]
    tokens, mask, _ = sample_rows(ctx, old.params, prompt_ids, jax.random.key(seed))
    responses = [row[m].tolist() for row, m in zip(tokens, mask)]
    texts = [ctx.tokenizer.decode(r) for r in responses]
    outcome = np.asarray(ctx.verifier(texts, [ex for ex in examples for _ in range(n)]),
                         np.float32)
    seq = make_sequences([p for p in prompt_ids for _ in range(n)], responses, ctx.prompt_len,
                         config.rollout.max_new_tokens, ctx.tokenizer.pad_id)
    logp = lambda policy: np.asarray(response_logprobs(
        ctx.model_cfg, policy.params, seq.tokens, seq.token_mask, seq.prompt_len))
    old_logp, ref_logp = logp(old), logp(ref)
  keep = np.ones(len(examples), bool)
  if config.filter.enable:
    keep = np.asarray(accuracy_filter(outcome, n, config.filter.acc_lo, config.filter.acc_hi))
  kept = np.repeat(keep, n)
  return {"outcome": outcome[kept], "old_logp": old_logp[kept], "ref_logp": ref_logp[kept],
          "mask": np.asarray(seq.response_mask)[kept], "groups": int(keep.sum()),
          "sampled_groups": len(examples), "mean_outcome": float(outcome.mean())}


def format_table(rows: list[dict]) -> str:
  lines = ["| eta | 1/eta | std(G/eta) | std(A_grpo) | ratio | sign flips |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['eta']:g} | {1 / r['eta']:.3g} | {r['kl_term_std']:.4g} | "
                 f"{r['grpo_std']:.4g} | {r['ratio']:.3g} | {100 * r['sign_flips']:.1f}% |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sft", required=True, help="pi_ref: the SFT policy (HF directory)")
  parser.add_argument("--policy", default=None,
                      help="pi_old: a trained policy (HF directory or WORKDIR/checkpoints[/STEP]); "
                           "default: the SFT itself (the KL-to-go is then zero)")
  parser.add_argument("--config", default="configs/lab/frpo.py")
  parser.add_argument("--etas", default=",".join(f"{e:g}" for e in DEFAULT_ETAS))
  parser.add_argument("--prompts", type=int, default=128, help="eval problems to sample")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override (repeatable), e.g. model.preset=tiny")
  args = parser.parse_args(argv)
  config = apply_overrides(load_config_file(args.config),
                           [f"init_from={args.sft}", "mesh.num_devices=1", *args.override])
  batch = sample_batch(config, args.sft, args.policy, args.prompts, args.seed)
  print(f"{batch['groups']} of {batch['sampled_groups']} groups in the accuracy band "
        f"(mean outcome {batch['mean_outcome']:.3f}); pi_old = {args.policy or args.sft}")
  if not batch["groups"]:
    print("no group passed the accuracy filter: sample more prompts (--prompts) or pass "
          "--override filter.enable=false")
    return []
  etas = [float(e) for e in args.etas.split(",") if e.strip()]
  rows = scale_table(batch["outcome"], batch["old_logp"], batch["ref_logp"], batch["mask"],
                     config.rollout.n, etas)
  print(format_table(rows))
  if not args.policy:
    print("pi_old = pi_ref: the KL-to-go is zero at FRPO's first step; pass --policy with a "
          "trained policy (e.g. the lab GRPO control's) to see the drift FRPO penalises.")
  return rows


if __name__ == "__main__":
  main()

"""Where an implicit PRM puts its reward on register chains: q_t by line class and token role.

    prl-jax export --workdir runs/lab/rl/prime/seed0 --step 20 --what prm --out /tmp/prm20
    prl-jax export --workdir runs/lab/rl/prime/seed0 --step 20 --out /tmp/policy20
    python benchmarks/register_prm_q.py --reference runs/lab/sft/final_hf --prm /tmp/prm20 \\
        --policy /tmp/policy20 [--problems 128] [--n 8] [--config.task.register.KEY=VALUE ...]

Samples n responses per eval problem from the policy (temperature 1), teacher-forces them
through the PRM and the reference, and prints the mean of the implicit PRM's token log-ratio

    q_t = log pi_prm(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)

for each (line class, token) cell: the line is "plain" or "bug" (its operation is of a bug type),
"right" or "wrong" (`register.step_labels`), and "after" when it follows the response's first
wrong line; the tokens of a line "+4=7\\n" are op, operand, "=", value and newline. Also prints
the mean sum of q over successful and failed responses and `prm/step_auroc` of beta * q. A PRM
that ranks lines right has q(value | wrong) < q(value | right); docs/lab.md ("PRIME's implicit
PRM") reads these numbers.
"""

import argparse
import collections
import json
import sys
import tempfile

import jax
import numpy as np

from prl_jax.config import split_config_args
from prl_jax.data import register
from prl_jax.eval.evaluate import load_policy, prompt_ids
from prl_jax.models.logprobs import response_logprobs
from prl_jax.reproduce.stages import load
from prl_jax.run.batch import make_sequences
from prl_jax.run.context import build_context
from prl_jax.sampling import SamplingConfig, sample_in_calls
from prl_jax.train.step_diagnostics import step_auroc

ROLES = ("op", "operand", "=", "value")


def teacher_forced(model, seq, prompt_len: int) -> np.ndarray:
  """[B, N] log-probs of the response tokens under `model`."""
  fn = jax.jit(lambda params, tokens, mask: response_logprobs(model.model_cfg, params, tokens,
                                                              mask, prompt_len))
  return np.asarray(fn(model.params, seq.tokens, seq.token_mask))


def cells(q, tokens, mask, texts, examples, bugs, newline_ids) -> dict:
  """{(line class, token role): [q values]} over every response (see the module docstring)."""
  out = collections.defaultdict(list)
  for b, (text, example) in enumerate(zip(texts, examples)):
    ops = register.parse_question(example["question"])[1]
    labels = register.step_labels(text, example)
    first = next((i for i, ok in enumerate(labels) if not ok), len(labels))
    line, position = 0, 0
    for t in np.flatnonzero(mask[b]):
      newline = int(tokens[b, t]) in newline_ids
      if line < min(len(ops), len(labels)):
        kind = ("bug" if ops[line] in bugs else "plain") + ("-right" if labels[line] else "-wrong")
        kind += "-after" if line > first else ""
        role = "newline" if newline else (ROLES[position] if position < len(ROLES) else "extra")
        out[(kind, role)].append(float(q[b, t]))
      position += 1
      if newline:
        line, position = line + 1, 0
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reference", required=True, help="pi_ref: the SFT policy (HF directory)")
  parser.add_argument("--prm", required=True, help="the implicit PRM (prl-jax export --what prm)")
  parser.add_argument("--policy", required=True, help="the policy whose samples are scored")
  parser.add_argument("--problems", type=int, default=128)
  parser.add_argument("--n", type=int, default=8)
  parser.add_argument("--config", metavar="FILE", help="default configs/lab/prime.py; then "
                      "--config.KEY=VALUE overrides")
  spec, overrides, rest = split_config_args(sys.argv[1:])
  args = parser.parse_args(rest)
  config = load(spec or "configs/lab/prime.py", [*overrides, f"init_from={args.reference}",
                              f"task.num_eval={args.problems}"])
  with tempfile.TemporaryDirectory() as workdir:
    ctx = build_context(config, workdir)
    reference, prm, policy = (load_policy(ctx, d) for d in (args.reference, args.prm, args.policy))
  tok = policy.tokenizer
  examples = ctx.eval_examples[:args.problems]
  prompts = [prompt_ids(tok, ex["prompt"]) for ex in examples]
  max_new = config.rollout.max_new_tokens
  scfg = SamplingConfig(max_new_tokens=max_new, temperature=1.0, eos_id=tok.eos_id,
                        pad_id=tok.pad_id, n=args.n)
  part = sample_in_calls(policy.params, policy.model_cfg, [prompts], jax.random.key(config.seed),
                         scfg, pad_to=[len(prompts)])[0]
  responses = [row[m].tolist() for row, m in zip(part.tokens, part.mask)]
  prompt_len = max(len(p) for p in prompts)
  seq = make_sequences([p for p in prompts for _ in range(args.n)], responses, prompt_len,
                       max_new, tok.pad_id)
  mask = np.asarray(seq.response_mask)
  q = (teacher_forced(prm, seq, prompt_len) - teacher_forced(reference, seq, prompt_len)) * mask
  texts = [tok.decode(r) for r in responses]
  rows = [ex for ex in examples for _ in range(args.n)]
  outcome = np.array([register.check(t, ex) for t, ex in zip(texts, rows)])
  reg = config.task.register
  tokens = np.asarray(seq.tokens)[:, prompt_len:]
  newline_ids = tok.encode("\n")
  table = cells(q, tokens, mask, texts, rows, register.configured_bugs(reg),
                newline_ids)
  print(json.dumps({
      "responses": len(texts), "success": float(outcome.mean()),
      "sum_q_success": float(q.sum(1)[outcome > 0].mean()) if outcome.any() else None,
      "sum_q_failure": float(q.sum(1)[outcome == 0].mean()) if (outcome == 0).any() else None,
      "step_auroc": step_auroc(config.algo.prime.beta * q, tokens, mask, newline_ids, texts, rows),
      "q": {f"{kind} {role}": {"mean": float(np.mean(v)), "tokens": len(v)}
            for (kind, role), v in sorted(table.items())}}, indent=1))


if __name__ == "__main__":
  main()

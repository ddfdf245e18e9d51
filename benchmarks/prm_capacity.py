"""Can a PRM of the lab policy's architecture learn to check a register line at all?

    python benchmarks/prm_capacity.py --init runs/lab/capacity_sft/final_hf --out runs/prm_capacity

The lab's PRMs rank lines near chance on every label type, exact labels included (docs/lab.md,
"PRMs on exact step labels"). This separates what such a PRM could know from what its training
teaches it, on held-out lines of one labelled set:

- likelihood: the starting model's log-probability of each line's written value, no training
  (a generative check: the clean SFT writes the right value on every line, so a wrong value is
  an unlikely token to it);
- operation prior: P(line right | its operation) counted on the training lines, what a scorer
  learns without reading the value at all. On the buggy demonstrator's lines (`--lines buggy`)
  the bug types make it informative; on uniform slips (`--lines uniform`, the default: every line
  independently gets a uniformly random wrong value with probability `--slip`) it is 0.5, so
  only a PRM that checks the value can rank them;
- the PRM: `train_prm` as `prl-jax erprm` runs it (the Y/N readout after each line, AdamW with
  cosine decay) on each line's own label (`register.step_labels`: its operation applied to the
  value written on the line before), its held-out AUROC measured every `--probe-every` steps;
- right value by depth: a logit lens at each line's value (the share of lines whose right value
  the first L layers already predict), to see how many layers are left after the computation;
- `--expand-layers N` starts the PRM (and every reading) from the --init model with N identity
  layers on top (`models.expand.expand_depth`: zero output projections, the same logits), so
  the PRM has layers above the one where the policy has computed a line's value;
- `--target parity` trains the same PRM on "the written value is even", a label it can read off
  the line's last digit: the readout itself sees the line when this reaches AUROC ~1.

Writes capacity.json (every reading and the PRM's AUROC curve) to --out.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import random
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from prl_jax.config import apply_overrides, load_config_file  # noqa: E402
from prl_jax.data import register  # noqa: E402
from prl_jax.eval.best_of_n import roc_auc  # noqa: E402
from prl_jax.eval.prm_experiment import label_problems  # noqa: E402
from prl_jax.models.expand import expand_depth, first_layers  # noqa: E402
from prl_jax.models.logprobs import response_logprobs  # noqa: E402
from prl_jax.models.transformer import Transformer  # noqa: E402
from prl_jax.prm import imports  # noqa: E402
from prl_jax.prm import model as prm_model  # noqa: E402
from prl_jax.run.context import build_context, initial_policy_params  # noqa: E402

LABEL = imports.DATA_LABEL


def prefix_labels(response: str, example: dict) -> list[bool]:
  """Line i is good iff lines 0..i are all right (the hard Monte Carlo label in the limit)."""
  good, labels = True, []
  for ok in register.step_labels(response, example):
    good = good and ok
    labels.append(good)
  return labels


def labelled_rows(problems: list[dict], per_problem: int, lines: str, slip: float, settings,
                  target: str, seed: int) -> list[dict]:
  """TRL stepwise rows: `per_problem` solutions of each problem, one label per line: the line's
  own (`target="line"`), whether every line up to it is right ("prefix") or whether its value
  is even ("parity")."""
  bugs = register.configured_bugs(settings) if lines == "buggy" else {}
  bug_rate = settings.bug_rate if lines == "buggy" else 0.0
  slip_rate = settings.slip_rate if lines == "buggy" else slip
  draw = random.Random(seed)
  rows = []
  for ex in problems:
    for _ in range(per_problem):
      text = register.demonstrate(ex["question"], draw, bugs, bug_rate=bug_rate,
                                  slip_rate=slip_rate, rule=settings.rule)
      if target == "parity":
        labels = [int(line[-1]) % 2 == 0 for line in text.split("\n")]
      elif target == "prefix":
        labels = prefix_labels(text, ex)
      else:
        labels = register.step_labels(text, ex)
      rows.append({"prompt": ex["prompt"], "completions": text.split("\n"), "labels": labels})
  return rows


def operation_prior(train: list[dict], heldout: list[dict]) -> np.ndarray:
  """Each held-out line's P(label | its operation, e.g. "+7"), counted on the training lines."""
  operation = lambda step: step.strip()[:2]
  right, seen = collections.Counter(), collections.Counter()
  for rec in train:
    for step, label in zip(rec["steps"], rec["labels"][LABEL]):
      right[operation(step)] += label
      seen[operation(step)] += 1
  return np.array([right[operation(s)] / max(1, seen[operation(s)])
                   for rec in heldout for s in rec["steps"]])


def value_positions(batch: prm_model.PrmBatch) -> tuple[np.ndarray, np.ndarray]:
  """(rows, sequence positions) of every labelled line's written value, in line order.

  A line "+4=7\\n" ends at its newline (the last line at EOS), so its value is the token before
  the step end.
  """
  rows, ends = np.nonzero(np.asarray(batch.step_end))
  return rows, batch.seq.prompt_len + ends - 1


def value_logprobs(model_cfg, params, batch: prm_model.PrmBatch) -> np.ndarray:
  """log pi(written value | everything before it) of every labelled line, in line order."""
  seq = batch.seq
  logp = np.asarray(response_logprobs(model_cfg, params, seq.tokens, seq.token_mask,
                                      seq.prompt_len))
  rows, at = value_positions(batch)
  return logp[rows, at - seq.prompt_len]


def right_value_lens(model_cfg, params, batch: prm_model.PrmBatch, right: list[int],
                     tokenizer) -> list[float]:
  """Logit lens at each line's value: for L = 1..num_layers, the share of lines whose right value
  is the argmax of the logits the first L layers give (final norm and output layer applied).

  Where the right value first becomes readable tells how many layers are left after it for a
  later position to read it and compare it with the value written.
  """
  rows, at = value_positions(batch)
  want = np.array([tokenizer.encode(str(v))[0] for v in right])
  shares = []
  for depth in range(1, model_cfg.num_layers + 1):
    cfg, cut = first_layers(model_cfg, params, depth)
    logits, _ = Transformer(cfg).apply(cut, batch.seq.tokens, token_mask=batch.seq.token_mask)
    guess = np.argmax(np.asarray(logits)[rows, at - 1], axis=-1)  # t - 1 predicts t
    shares.append(float(np.mean(guess == want)))
  return shares


def right_values(records: list[dict], problems: list[dict], per_problem: int,
                 rule: str = "add") -> list[int]:
  """Each line's right value: its operation applied to the value written on the line before."""
  out = []
  for i, rec in enumerate(records):
    previous, ops = register.parse_question(problems[i // per_problem]["question"])
    for step, op in zip(rec["steps"], ops):
      out.append(register.apply(previous, op, rule))
      previous = int(step.strip()[-1])
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/lab/erprm.py")
  parser.add_argument("--init", required=True, help="the model every reading starts from (HF "
                      "layout, e.g. the clean SFT runs/lab/capacity_sft/final_hf)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--lines", choices=("uniform", "buggy"), default="uniform")
  parser.add_argument("--slip", type=float, default=0.25, help="wrong-line rate of --lines uniform")
  parser.add_argument("--target", choices=("line", "parity"), default="line")
  parser.add_argument("--problems", type=int, default=2048, help="training questions")
  parser.add_argument("--heldout", type=int, default=256, help="held-out questions")
  parser.add_argument("--solutions-per-problem", type=int, default=4)
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--probe-every", type=int, default=50)
  parser.add_argument("--expand-layers", type=int, default=0,
                      help="identity layers added on top of --init (0: none)")
  parser.add_argument("--override", action="append", default=[], help="a config override, "
                      "e.g. mesh.num_devices=1 (repeatable)")
  args = parser.parse_args(argv)

  config = load_config_file(args.config)
  apply_overrides(config, [f"init_from={args.init}"] + args.override)
  os.makedirs(args.out, exist_ok=True)
  ctx = build_context(config, args.out, reads_prm=False)
  init = initial_policy_params(ctx)
  if args.expand_layers:  # before anything reads ctx.model_cfg
    model_cfg, init = expand_depth(ctx.model_cfg, init, args.expand_layers,
                                   jax.random.key(config.seed))
    ctx = dataclasses.replace(ctx, model_cfg=model_cfg)
  problems = label_problems(ctx.train_examples, args.problems + args.heldout, config.seed)
  rows = labelled_rows(problems, args.solutions_per_problem, args.lines, args.slip,
                       config.task.register, args.target, config.seed)
  records = [imports.trl_record(i, row) for i, row in enumerate(rows)]
  cut = args.heldout * args.solutions_per_problem
  heldout, train = records[:cut], records[cut:]
  spec = prm_model.PrmSpec(name=f"PRM ({args.target} labels)", kind="prm", label=LABEL,
                           plus_token=config.algo.erprm.plus_token,
                           minus_token=config.algo.erprm.minus_token)
  batch = prm_model.prm_batch(ctx.tokenizer, heldout, "prm", LABEL, ctx.prompt_len,
                              config.rollout.max_new_tokens)
  truth = batch.target[batch.step_end] > 0.5
  placed = ctx.place_batch(batch)
  plus_id = prm_model.token_id(ctx.tokenizer, spec.plus_token)
  minus_id = prm_model.token_id(ctx.tokenizer, spec.minus_token)
  score = jax.jit(prm_model.prm_step_scores, static_argnums=0)

  def heldout_auroc(params) -> dict:
    s = np.asarray(score(ctx.model_cfg, params, placed.seq, placed.step_end, plus_id, minus_id))
    return {"heldout_auroc": roc_auc(s[batch.step_end], truth)}

  init = ctx.place_state(init)
  result = {
      "lines": args.lines, "target": args.target, "init": args.init,
      "train_solutions": len(train), "heldout_lines": int(truth.size),
      "heldout_right": float(truth.mean()),
      "likelihood_auroc": roc_auc(value_logprobs(ctx.model_cfg, init, placed), truth),
      "operation_prior_auroc": roc_auc(operation_prior(train, heldout), truth),
      "right_value_by_depth": right_value_lens(
          ctx.model_cfg, init, placed, right_values(heldout, problems, args.solutions_per_problem,
                                                config.task.register.rule),
          ctx.tokenizer),
  }
  print(json.dumps(result, indent=1), flush=True)
  summary = prm_model.train_prm(ctx, prm_model.PrmStart(ctx.model_cfg, init), train, spec,
                                os.path.join(args.out, "prm"),
                                steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                grad_clip=config.optim.prm_grad_clip, seed=config.seed,
                                probe=heldout_auroc, probe_every=args.probe_every)
  curve = []
  with open(os.path.join(args.out, "prm", "prm_metrics.jsonl")) as fh:
    for line in fh:
      m = json.loads(line)
      if "prm/heldout_auroc" in m:
        curve.append([m["step"], m["prm/heldout_auroc"]])
  result.update(prm=summary, prm_auroc_curve=curve,
                settings={k: v for k, v in vars(args).items() if k != "out"})
  with open(os.path.join(args.out, "capacity.json"), "w") as fh:
    json.dump(result, fh, indent=1)
  print(json.dumps({"prm": summary, "curve": curve}, indent=1))


if __name__ == "__main__":
  main()

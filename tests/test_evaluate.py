"""The evaluation driver: metrics of a scripted policy against NumPy references, determinism and
reproducibility of results.json on a tiny random model, the files, and `prl-jax eval` end to end."""

import collections
import json
import math
import os
import types

import jax
import numpy as np
import pytest

from prl_jax import cli, sampling
from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.data import arithmetic
from prl_jax.eval import evaluate as ev
from prl_jax.eval.summary import bootstrap_se, maj_ks, summarize, write_results
from prl_jax.eval import plots
from prl_jax.models.config import preset
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.models.transformer import init_params
from prl_jax.rewards.verify import Verifier

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "configs", "mini", "rloo.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOK = CharTokenizer()
_VERIFIER = Verifier(workers=0)


def verifier(texts, examples):
  return _VERIFIER(texts, examples)


# ------------------------------------------------------------------------------------------------
# NumPy / plain-Python references, written from the definitions.


def ref_pass_at_k(n, c, k):
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ref_majority(answers):
  """The answer with the most votes; among ties, the one whose last needed vote comes first."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None
  top = max(counts.values())

  def reached_at(answer):
    return [i for i, a in enumerate(answers) if a == answer][top - 1]

  return min((a for a, v in counts.items() if v == top), key=reached_at)


def ref_summary(plan, gold, greedy, n, max_new):
  """Metrics of a scripted policy: plan[p][j] = (answer or None, truncated)."""
  answers = [[a for a, _ in row] for row in plan]
  c = np.array([sum(a == g for a in row) for row, g in zip(answers, gold)])
  out = {f"mean@{n}": float(np.mean(c / n))}
  for k in range(1, n + 1):
    out[f"pass@{k}"] = float(np.mean([ref_pass_at_k(n, ci, k) for ci in c]))
  for k in maj_ks(n):
    out[f"maj@{k}"] = float(np.mean([ref_majority(row[:k]) == g for row, g in zip(answers, gold)]))
  out["greedy"] = float(np.mean([a == g for a, g in zip(greedy, gold)]))
  lengths = [max_new if t else len(_text(a)) + 1 for row in plan for a, t in row]
  out["response_length"] = float(np.mean(lengths))
  out["truncated"] = float(np.mean([t for row in plan for _, t in row]))
  return out


def _text(answer):
  return "no idea" if answer is None else f"The answer is {answer}"


# ------------------------------------------------------------------------------------------------
# A scripted "model": the sampler returns planned responses, so every metric is known.


def _scripted_sampler(examples, plan, greedy, tokenizer):
  by_prompt = {tuple(tokenizer.encode(ex["prompt"])): p for p, ex in enumerate(examples)}

  def fake_sample(params, model_cfg, prompts, key, scfg, *, mesh=None, **_):
    width = scfg.max_new_tokens
    tokens = np.full((len(prompts) * scfg.n, width), tokenizer.pad_id, np.int32)
    mask = np.zeros(tokens.shape, bool)
    truncated = np.zeros(len(tokens), bool)
    row = 0
    for ids in prompts:
      p = by_prompt[tuple(ids)]
      for j in range(scfg.n):
        answer, cut = (greedy[p], False) if scfg.greedy else plan[p][j]
        if cut:  # no EOS: the text fills every position
          ids_out = tokenizer.encode(_text(answer).ljust(width))
        else:
          ids_out = tokenizer.encode(_text(answer)) + [tokenizer.eos_id]
        tokens[row, :len(ids_out)] = ids_out
        mask[row, :len(ids_out)] = True
        truncated[row] = cut
        row += 1
    return types.SimpleNamespace(tokens=tokens, mask=mask, truncated=truncated,
                                 lengths=mask.sum(axis=1),
                                 logprobs=np.zeros(tokens.shape, np.float32))

  return fake_sample


def test_metrics_of_a_scripted_policy_match_references(monkeypatch):
  n, max_new, problems = 8, 24, 7
  rng = np.random.default_rng(3)
  pool = arithmetic.generate(40, (1, 3), seed=5)
  examples = list({ex["prompt"]: ex for ex in pool}.values())[:problems]  # distinct prompts
  gold = [int(ex["answer"]) for ex in examples]
  plan = []
  for p, g in enumerate(examples):
    options = [gold[p], gold[p] + 1, gold[p] + 2, None]
    # Problem 0 always right, problem 1 always wrong, the rest mixed (ties included).
    probs = [1, 0, 0, 0] if p == 0 else [0, 0.5, 0.3, 0.2] if p == 1 else [0.35, 0.3, 0.2, 0.15]
    picks = rng.choice(4, size=n, p=probs)
    plan.append([(options[i], bool(rng.random() < 0.2)) for i in picks])
  greedy = [gold[p] if rng.random() < 0.5 else gold[p] - 1 for p in range(problems)]
  monkeypatch.setattr(sampling, "sample", _scripted_sampler(examples, plan, greedy, TOK))

  results = ev.evaluate(None, preset("tiny"), TOK, examples, verifier, n=n, temperature=1.0,
                        max_new_tokens=max_new, seed=0, batch_prompts=3)
  summary = results["summary"]
  for key, value in ref_summary(plan, gold, greedy, n, max_new).items():
    assert summary[key] == pytest.approx(value, abs=1e-12), key
  assert summary["problems"] == problems
  assert summary[f"pass@{n}"] >= summary[f"mean@{n}"]
  for d, group in summary["by_difficulty"].items():
    idx = [p for p, ex in enumerate(examples) if str(ex["difficulty"]) == d]
    ref = ref_summary([plan[p] for p in idx], [gold[p] for p in idx], [greedy[p] for p in idx],
                      n, max_new)
    assert group["problems"] == len(idx)
    for key, value in ref.items():
      assert group[key] == pytest.approx(value, abs=1e-12), (d, key)
  assert sum(g["problems"] for g in summary["by_difficulty"].values()) == problems
  for rec, row, g in zip(results["records"], plan, gold):
    assert rec["answers"] == [None if a is None else str(a) for a, _ in row]
    assert rec["c"] == sum(a == g for a, _ in row)


def test_answer_extractors():
  right = "3+1=4\n4*6=24\nThe answer is (3+1)*6"
  other = "1+3=4\n6*4=24\nThe answer is 6*(1+3)."
  example = {"question": "make 24 from 3 4 6 1", "answer": "24", "task": "countdown"}
  countdown_answer = ev.answer_extractor("countdown")
  # Different expressions with the same value vote together.
  assert countdown_answer(right, example) == countdown_answer(other, example) == "24"
  assert countdown_answer("nothing here", example) is None
  assert ev.answer_extractor("arithmetic")("12+5=17\nThe answer is 17", {}) == "17"
  assert ev.answer_extractor("arithmetic")("17", {}) is None  # the strict answer line only
  assert ev.answer_extractor("math")(r"so \boxed{\frac{1}{2}}.", {}) == r"\frac{1}{2}"
  with pytest.raises(ValueError, match="known tasks"):
    ev.answer_extractor("poetry")


def test_bootstrap_standard_error():
  assert bootstrap_se(np.full(50, 0.3)) == pytest.approx(0.0, abs=1e-15)
  values = np.random.default_rng(0).random(400)
  se = bootstrap_se(values)
  assert se == bootstrap_se(values)  # fixed seed
  assert se == pytest.approx(values.std() / math.sqrt(len(values)), rel=0.1)
  both = bootstrap_se(np.stack([values, 1 - values], axis=1))
  np.testing.assert_allclose(both, [se, se], rtol=1e-12)  # the same resamples for every column


def test_maj_ks():
  assert maj_ks(1) == [1]
  assert maj_ks(8) == [1, 2, 4, 8]
  assert maj_ks(6) == [1, 2, 4, 6]


def test_summarize_rejects_inconsistent_records():
  record = {"id": "x", "difficulty": 1, "n": 2, "c": 2, "correct": [True, False],
            "answers": ["1", "2"], "lengths": [3, 3], "truncated": [False, False],
            "greedy_correct": True}
  with pytest.raises(ValueError, match="record 'x'.*c == sum"):
    summarize([record], 2)


# ------------------------------------------------------------------------------------------------
# A tiny random model through the real sampler.


@pytest.fixture(scope="module")
def tiny():
  # The shapes of the CLI tests below (4 prompts per call, n=4, 12 new tokens, the same model
  # config): the compiled sampler is shared.
  cfg = preset("tiny", vocab_size=TOK.vocab_size)
  examples = arithmetic.generate(4, (1, 2), seed=7, high=9)
  return cfg, init_params(cfg, jax.random.key(0)), examples


def _run(tiny, seed):
  cfg, params, examples = tiny
  return ev.evaluate(params, cfg, TOK, examples, verifier, n=4, temperature=1.0,
                     max_new_tokens=12, seed=seed, batch_prompts=4)


def test_same_seed_same_json_and_summary_from_records(tiny, tmp_path):
  first = write_results(_run(tiny, 0), str(tmp_path / "a"))
  second = write_results(_run(tiny, 0), str(tmp_path / "b"))
  with open(first["results.json"], "rb") as a, open(second["results.json"], "rb") as b:
    assert a.read() == b.read()
  with open(first["results.json"]) as fh:
    stored = json.load(fh)
  assert summarize(stored["records"], stored["settings"]["n"]) == stored["summary"]
  assert len(stored["records"]) == 4 and all(len(r["correct"]) == 4 for r in stored["records"])
  # Greedy decoding uses no randomness: the same whatever the seed.
  other = _run(tiny, 1)
  assert [r["greedy_response"] for r in other["records"]] == \
      [r["greedy_response"] for r in stored["records"]]


def test_write_results_files(tiny, tmp_path):
  paths = write_results(_run(tiny, 0), str(tmp_path / "out"))
  assert sorted(os.listdir(tmp_path / "out")) == ["pass_at_k.png", "results.json", "results.md"]
  with open(paths["pass_at_k.png"], "rb") as fh:
    assert fh.read(8) == PNG_SIGNATURE
  import matplotlib.image
  image = matplotlib.image.imread(paths["pass_at_k.png"])
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  with open(paths["results.md"]) as fh:
    table = fh.read()
  assert "| all | 4 |" in table and "mean@4" in table and "pass@4" in table
  assert table.count("| difficulty ") == 2  # chains of 1 and 2 operations


def test_log_axis_ticks_are_plain_numbers():
  fig = plots.line_figure({"pass@k": ([1, 2, 4, 8, 16], [0.1, 0.2, 0.3, 0.4, 0.5])}, logx=2)
  fig.canvas.draw()
  labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if 1 <= t.get_position()[0] <= 16]
  assert labels == ["1", "2", "4", "8", "16"]


def test_line_plot_checks_its_input(tmp_path):
  path = plots.line_plot({"reward": ([1, 2, 3], [0.1, 0.4, 0.5])}, str(tmp_path / "r.png"),
                         xlabel="step", ylabel="reward")
  with open(path, "rb") as fh:
    assert fh.read(8) == PNG_SIGNATURE
  with pytest.raises(ValueError, match="equal length"):
    plots.line_plot({"bad": ([1, 2], [0.1])}, str(tmp_path / "bad.png"))


# ------------------------------------------------------------------------------------------------
# The command line.

CLI_OVERRIDES = ["--config.rollout.max_new_tokens=12",
                 "--config.task.num_train=16", "--config.task.num_eval=4",
                 "--config.eval.num_problems=4", "--config.eval.n=4",
                 "--config.mesh.num_devices=1", "--config.log.progress=False"]


def _cli(workdir, *extra):
  return cli.main(["eval", "--config", CONFIG_FILE, "--workdir", str(workdir), *CLI_OVERRIDES,
                   *extra])


def _config():
  config = load_config_file(CONFIG_FILE)
  return apply_overrides(config, [o[len("--config."):] for o in CLI_OVERRIDES])


def test_cli_errors_are_clear(tmp_path, capsys):
  assert _cli(tmp_path / "w", "--model", str(tmp_path / "missing")) == 2
  assert "--model" in capsys.readouterr().err
  assert _cli(tmp_path / "w") == 2
  err = capsys.readouterr().err
  assert "No policy to evaluate" in err and "--model" in err


def test_cli_final_hf_and_checkpoint_agree(tmp_path, capsys):
  """WORKDIR/final_hf and the checkpointed policy of the same params give the same results."""
  from prl_jax.algorithms.registry import get_recipe
  from prl_jax.run.checkpoint import Checkpointer
  from prl_jax.run.state import init_state
  from prl_jax.run.context import build_context

  config = _config()
  exported, checkpointed = tmp_path / "exported", tmp_path / "checkpointed"
  ctx = build_context(config, str(checkpointed))
  state = init_state(ctx, get_recipe(config.method))
  with Checkpointer(os.path.join(checkpointed, "checkpoints")) as ckpt:
    ckpt.save(1, state, {"data_position": 0}, force=True)
  ctx.export_policy(state.policy.params, os.path.join(exported, "final_hf"))

  assert _cli(exported) == 0
  printed = capsys.readouterr().out
  assert "| all | 4 |" in printed
  assert _cli(checkpointed) == 0
  files = [os.path.join(d, "eval", "results.json") for d in (exported, checkpointed)]
  a, b = (json.load(open(f)) for f in files)
  assert a["settings"]["model"].endswith("final_hf")
  assert b["settings"]["model"] == os.path.join(checkpointed, "checkpoints", "1")
  assert a["records"] == b["records"] and a["summary"] == b["summary"]
  assert os.path.exists(os.path.join(exported, "eval", "pass_at_k.png"))


def test_splits():
  config = _config()
  train = arithmetic.generate(6, (1, 2), seed=1, high=9)
  evals = arithmetic.generate(6, (1, 2), seed=2, high=9)
  assert ev.split_examples(config, "eval", train, evals) == evals[:4]  # eval.num_problems
  assert ev.split_examples(config, "train", train, evals) == train[:4]
  heldout = ev.split_examples(config, "heldout", train, evals)
  assert len(heldout) == 4
  lo, hi = arithmetic.HELDOUT_OPS
  for ex in heldout:
    operands, ops = arithmetic.parse_question(ex["question"])
    assert lo <= ex["difficulty"] == len(ops) <= hi
    assert max(operands) <= config.task.max_operand  # the training operand range
  with pytest.raises(ConfigError, match="choose one of"):
    ev.split_examples(config, "test", train, evals)
  config.task.train_file = "data.jsonl"
  with pytest.raises(ConfigError, match="synthetic tasks only"):
    ev.split_examples(config, "heldout", train, evals)

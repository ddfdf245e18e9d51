"""Synthetic tasks for chat models: `task.template` puts each question in an instruction and the
tokenizer's chat template, once, when the run's problems are built; the arithmetic checker finds the
answer line in a free-text reply. A tiny BPE tokenizer with a chat template stands in for a real
instruct model's."""

import json
import os

import jax
import pytest

from prl_jax import cli
from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.data import arithmetic, templates
from prl_jax.eval import evaluate as ev
from prl_jax.eval.summary import summarize
from prl_jax.models.tokenizer import load_tokenizer
from prl_jax.models.transformer import init_params
from prl_jax.rewards.verify import Verifier
from prl_jax.run.context import build_context, validate

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "configs", "mini", "rloo.py")
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
OVERRIDES = {"rollout.max_new_tokens": 8, "task.num_train": 8, "task.num_eval": 4,
             "eval.num_problems": 4, "eval.n": 2, "mesh.num_devices": 1,
             "log.progress": False, "task.max_prompt_len": 256,
             "task.template": "arithmetic_chat"}


@pytest.fixture(scope="module")
def chat_tokenizer_dir(tmp_path_factory):
  """A byte-level BPE of ~300 ids trained here, saved with a chat template."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  transformers = pytest.importorskip("transformers")
  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  bpe.train_from_iterator(["Calculate 12+34-5. The answer is 41."] * 20, trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>",
                                              eos_token="</s>", pad_token="<pad>")
  fast.chat_template = CHAT_TEMPLATE
  path = str(tmp_path_factory.mktemp("chat_tok"))
  fast.save_pretrained(path)
  return path


def _config(**extra):
  overrides = {**OVERRIDES, **extra}
  return apply_overrides(load_config_file(CONFIG_FILE), [f"{k}={v}" for k, v in overrides.items()])


def test_arithmetic_chat_prompts_are_rendered_by_the_chat_template(chat_tokenizer_dir, tmp_path):
  ctx = build_context(_config(**{"model.tokenizer": chat_tokenizer_dir}), str(tmp_path))
  tok = load_tokenizer(chat_tokenizer_dir)
  heldout = ev.split_examples(ctx.config, "heldout", ctx.train_examples, ctx.eval_examples,
                              ctx.tokenizer)
  for ex in ctx.train_examples + ctx.eval_examples + heldout:
    prompt = ex["prompt"]
    # One string, the chat template's rendering of one user turn, the assistant turn opened.
    assert isinstance(prompt, str)
    assert prompt.startswith("<|user|>") and prompt.endswith("\n<|assistant|>")
    instruction = prompt[len("<|user|>"):-len("\n<|assistant|>")]
    assert f" {ex['question']}. " in instruction and "'The answer is N'" in instruction
    assert prompt == tok.apply_chat_template([{"role": "user", "content": instruction}])
    assert ev.prompt_ids(tok, prompt) == tok.encode(prompt)
    assert ex["task"] == "arithmetic" and ex["answer"] == str(arithmetic.evaluate(ex["question"]))
  assert min(ex["difficulty"] for ex in heldout) > ctx.config.task.max_ops
  # The default stays the plain text prompt of the small policies.
  plain = build_context(_config(**{"task.template": "plain"}), str(tmp_path))
  assert plain.eval_examples[0]["prompt"] == f"Q: {plain.eval_examples[0]['question']}\nA: "


def test_template_errors_are_clear(tmp_path):
  with pytest.raises(ConfigError, match="task.template='chat'.*arithmetic_chat"):
    validate(_config(**{"task.template": "chat"}))
  data = tmp_path / "train.jsonl"
  data.write_text("")
  with pytest.raises(ConfigError, match="task.template applies to the synthetic tasks"):
    validate(_config(**{"task.train_file": str(data)}))
  # The character tokenizer has no chat template to render the messages with.
  with pytest.raises(ValueError, match="tokenizer has no chat template"):
    build_context(_config(), str(tmp_path))
  with pytest.raises(ValueError, match="tokenizer has no chat template"):
    templates.prompt_text(None, [{"role": "user", "content": "1+2"}])
  assert templates.prompt_text(None, "Q: 1+2\nA: ") == "Q: 1+2\nA: "


REPLIES = [  # (a chat model's reply to "Calculate 37+58-19", its score against 76)
    ("To calculate 37+58-19:\n\n37 + 58 = 95\n95 - 19 = 76\n\nSo, the answer is 76.", 1.0),
    ("37 + 58 = 95, 95 - 19 = 76.\nThe answer is 76", 1.0),
    ("So, the answer is 75.", 0.0),
    ("First the answer is 76. Then we check it, and the answer is 80.", 0.0),  # the last one counts
    ("37 + 58 - 19 = 76", 0.0),  # no answer line: a bare number is not an answer
    ("So, the final answer is 76.", 0.0),
    ("The answer is 7.6.", 0.0),
]


@pytest.mark.parametrize("reply,score", REPLIES)
def test_checker_reads_the_answer_line_in_free_text(reply, score):
  example = arithmetic.make_example("37+58-19", id="x", difficulty=2, template="arithmetic_chat")
  assert example["answer"] == "76"
  assert arithmetic.check(reply, example) == score
  assert Verifier(workers=0)([reply], [example]) == [score]


def test_prl_jax_eval_with_a_chat_template(chat_tokenizer_dir, tmp_path, capsys):
  """`prl-jax eval` end to end: a random policy over the chat tokenizer, prompts rendered."""
  from prl_jax.models.config import preset
  tok = load_tokenizer(chat_tokenizer_dir)
  workdir = tmp_path / "run"
  ctx = build_context(_config(**{"model.tokenizer": chat_tokenizer_dir}), str(workdir))
  cfg = preset("tiny", vocab_size=tok.vocab_size)
  ctx.export_policy(init_params(cfg, jax.random.key(0)), str(workdir / "final_hf"))
  args = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  assert cli.main(["eval", "--config", CONFIG_FILE, "--workdir", str(workdir), *args,
                   f"--config.model.tokenizer={chat_tokenizer_dir}"]) == 0
  assert "| all | 4 |" in capsys.readouterr().out
  results = json.load(open(workdir / "eval" / "results.json"))
  assert results["summary"] == summarize(results["records"], 2)
  assert all(r["n"] == 2 and r["reference"] is not None for r in results["records"])

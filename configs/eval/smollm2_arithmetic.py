"""The pretrained SmolLM2-135M-Instruct on the synthetic arithmetic chains, in its chat template.

    prl-jax import-gguf --smollm2 --out runs/smollm2
    prl-jax eval --config configs/eval/smollm2_arithmetic.py:hf_dir=runs/smollm2 \\
        --workdir runs/smollm2_eval --model runs/smollm2

Arguments after `FILE:` (comma-separated key=value):
  hf_dir        the converted model (required): config.json, model.safetensors and the tokenizer
                files with its chat template, as `prl-jax import-gguf --smollm2` writes them
  min_ops, max_ops   operations per chain (default 1 to 2)
  max_operand   operands are drawn from [1, max_operand] (default 99)
  num_problems  problems evaluated (default 64)

Each question is wrapped in the `arithmetic_chat` instruction (prl_jax.data.templates) and the
model's chat template; the arithmetic checker reads the closing "The answer is N" wherever it
stands in the free-text reply. eval.n samples at temperature 1 plus one greedy decode per problem,
as for the policies trained here; the reply may use up to 384 new tokens (a chatty model explains
each operation in a sentence).
"""

from configs import base
from prl_jax.config import ConfigError, parse_config_arg

ARGS = {"hf_dir": "", "min_ops": 1, "max_ops": 2, "max_operand": 99, "num_problems": 64}


def get_config(arg=None):
  args = parse_config_arg(arg, ARGS)
  if not args["hf_dir"]:
    raise ConfigError("configs/eval/smollm2_arithmetic.py needs the converted model: pass "
                      "--config configs/eval/smollm2_arithmetic.py:hf_dir=DIR with the directory "
                      "written by `prl-jax import-gguf --smollm2 --out DIR`.")
  c = base.get_config()
  c.model.hf_dir = args["hf_dir"]
  c.model.tokenizer = args["hf_dir"]

  c.task.name = "arithmetic"
  c.task.template = "arithmetic_chat"
  c.task.min_ops = args["min_ops"]
  c.task.max_ops = args["max_ops"]
  c.task.max_operand = args["max_operand"]
  c.task.num_eval = args["num_problems"]
  c.task.num_train = args["num_problems"]  # only the eval split is used; keep set-up cheap
  # The chat template adds a system message and turn markers: about 60 tokens for 4 operations.
  c.task.max_prompt_len = 128

  c.rollout.max_new_tokens = 384
  # 16 prompts x 4 samples per sampler call.
  c.rollout.prompts_per_step = 16
  c.rollout.n = 4
  c.eval.num_problems = args["num_problems"]
  c.eval.n = 4
  c.eval.temperature = 1.0
  return c

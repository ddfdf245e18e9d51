"""What every paper-scale config shares: local paths as a config argument, FSDP over every
device, bf16 compute with full remat, and chunked log-prob projections.

    prl-jax train --workdir gs://BUCKET/runs/prime \\
        --config configs/paper/prime_eurus2_7b.py:hf_dir=/ckpt/Eurus-2-7B-SFT,train_file=/data/train.parquet

Arguments after `FILE:` (comma-separated key=value; all optional, empty means unset):
  hf_dir      the starting policy in HF layout (config.json + safetensors); the reference and the
              PRM (where the method has them) start as copies of it
  tokenizer   a tokenizer directory (default: hf_dir; without either, the character tokenizer)
  train_file  training prompts, a file or directory in `layout`
  eval_file   held-out problems in the same layout
  layout      the data layout (prl_jax.data.math_files.LAYOUTS); each paper config has a default

Without `hf_dir` a paper config describes a randomly initialised model of the paper's shapes:
enough for `prl-jax memory` and for checking a launch, not for reproducing a number.
"""

from configs import base
from prl_jax.config import parse_config_arg

PATH_ARGS = {"hf_dir": "", "tokenizer": "", "train_file": "", "eval_file": "", "layout": ""}


def paper_config(arg, *, preset: str, layout: str, extra_args: dict | None = None):
  """(base config with the shared paper-scale settings, parsed arguments)."""
  args = parse_config_arg(arg, {**PATH_ARGS, "layout": layout, **(extra_args or {})})
  c = base.get_config()
  c.model.preset = preset
  c.model.hf_dir = args["hf_dir"]
  c.model.tokenizer = args["tokenizer"] or args["hf_dir"] or "char"
  c.task.name = args["layout"]
  c.task.train_file = args["train_file"]
  c.task.eval_file = args["eval_file"]
  # Parameters stay float32 (ModelConfig); matmuls run in bf16, and every decoder block is
  # recomputed in the backward pass so only its input is kept per layer (prl-jax memory).
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  # Attention 512 queries at a time: [512, T] scores per head instead of [T, T] at 4k tokens.
  c.model.attention_chunk = 512
  # ZeRO-3 style: every weight and optimizer moment split over all devices along "embed";
  # batches split over the same axis.
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  # One [rows, 512, vocab] float32 block of logits alive at a time (vocabularies of 128-152k).
  c.train.logprob_chunk = 512
  # Answers are checked in a pool of worker processes with per-answer timeouts: the inline check
  # cannot interrupt C-level big-integer arithmetic, which long paper runs do meet.
  c.task.verify_workers = 16
  c.checkpoint.keep = 2
  c.checkpoint.save_hf = True
  return c, args


def prl_setting(c, *, method: str, steps_mode: str, step_length: int, eval_n: int):
  """The PRL paper's shared run (docs/algorithms.md, PRL; the official run script's values).

  128 prompts x n = 5 at temperature 1, prompt/response 1024/3072; `adv=orm` with eta = 100;
  PPO-clip 0.2 with dual clip 3.0, token-mean, no KL or entropy loss; lr 1e-6 constant, AdamW
  weight decay 0.01 (verl's actor default, which the scripts keep), one update per rollout;
  500 steps; evaluation at temperature 1 every 50 steps.
  """
  c.method = method
  c.task.max_prompt_len = 1024
  c.rollout.prompts_per_step = 128
  c.rollout.n = 5
  c.rollout.max_new_tokens = 3072
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.filter.enable = False

  c.algo.prl.mode = "orm"
  c.algo.prl.eta = 100.0  # beta = 1 / eta = 0.01
  c.algo.steps.mode = steps_mode
  c.algo.steps.length = step_length
  c.algo.loss.clip_low = 0.2
  c.algo.loss.clip_high = 0.2
  c.algo.loss.dual_clip = 3.0
  c.algo.loss.agg = "token-mean"
  c.algo.loss.kl_coef = 0.0
  c.algo.loss.entropy_coef = 0.0

  c.optim.lr = 1e-6
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.01  # verl's actor AdamW default (the scripts do not set it)
  c.optim.grad_clip = 1.0

  c.train.steps = 500
  c.train.ppo_epochs = 1
  c.train.mini_batch_size = 0  # the whole batch: one policy update per rollout
  c.train.micro_batch_size = 64

  c.eval.every = 50
  c.eval.num_problems = 500
  c.eval.n = eval_n
  c.eval.temperature = 1.0
  c.checkpoint.every = 50
  return c


def prime_setting(c):
  """PRIME's sampling and update settings (docs/algorithms.md, PRIME; the PRIME and rePIRL configs):
  256 prompts x 4 responses of up to 3072 tokens at temperature 1, PPO-clip 0.2 without KL,
  AdamW lr 5e-7 (PRM 1e-6) constant, weight decay 0.01 (PRM 0), mini-batch 256, greedy eval
  every 16 steps. Each config then sets what differs (method, filter, steps, entropy bonus)."""
  c.task.max_prompt_len = 1024
  c.rollout.prompts_per_step = 256
  c.rollout.n = 4
  c.rollout.max_new_tokens = 3072
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0

  c.algo.gamma = 1.0
  c.algo.loss.clip_low = 0.2
  c.algo.loss.clip_high = 0.2
  c.algo.loss.dual_clip = 0.0
  c.algo.loss.agg = "token-mean"
  c.algo.loss.kl_coef = 0.0
  c.algo.loss.entropy_coef = 0.0

  c.optim.lr = 5e-7
  c.optim.prm_lr = 1e-6
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  # AdamW weight decay: the official trainer's default 1e-2 for the actor (and PPO's critic), 0
  # for the implicit PRM (its config sets prime_model.optim.weight_decay: 0).
  c.optim.weight_decay = 0.01
  c.optim.prm_weight_decay = 0.0
  c.optim.grad_clip = 1.0
  c.optim.prm_grad_clip = 10.0

  c.train.ppo_epochs = 1
  c.train.mini_batch_size = 256
  c.train.micro_batch_size = 64

  c.eval.every = 16
  c.eval.num_problems = 500
  c.eval.n = 1
  c.eval.temperature = 0.0
  c.checkpoint.every = 16
  return c

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
  # ZeRO-3 style: every weight and optimizer moment split over all devices along "embed";
  # batches split over the same axis.
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  # One [rows, 512, vocab] float32 block of logits alive at a time (vocabularies of 128-152k).
  c.train.logprob_chunk = 512
  c.checkpoint.keep = 2
  c.checkpoint.save_hf = True
  return c, args

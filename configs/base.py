"""Every key of a prl_jax run, with defaults. Method configs start from this and change a few.

Usage: prl-jax train --config configs/mini/prime.py --workdir runs/prime --config.train.steps=50
"""

import ml_collections

from prl_jax.sharding import DEFAULT_RULES


def get_config():
  c = ml_collections.ConfigDict()
  c.method = "prime"  # rloo grpo drgrpo reinforce ppo raft prime prl frpo erprm repirl (see docs/algorithms.md)
  c.seed = 0

  # Policy model: a preset name (prl_jax.models.config.PRESETS) or an HF directory in `hf_dir`.
  # hf_dir, tokenizer, init_from, task.*_file and algo.erprm.prm_dir also take a URL (gs://...,
  # copied to a local cache) and the model keys a Hugging Face Hub id such as
  # Qwen/Qwen2.5-Math-7B (from the HF cache; downloaded unless HF_HUB_OFFLINE=1).
  c.model = ml_collections.ConfigDict()
  c.model.preset = "tiny"
  c.model.hf_dir = ""
  c.model.dtype = "float32"
  c.model.remat = "none"
  c.model.attention_chunk = 0  # queries per attention block without a KV cache; 0 = all at once
  c.model.tokenizer = "char"  # "char", a directory with tokenizer files, a URL or a Hub id
  # Start from this checkpoint directory (e.g. an SFT run's workdir); "" = random init or hf_dir.
  c.init_from = ""

  c.task = ml_collections.ConfigDict()
  c.task.name = "arithmetic"  # arithmetic, countdown, or a data layout with task.train_file
  c.task.train_file = ""
  c.task.eval_file = ""
  c.task.num_train = 2000
  c.task.num_eval = 64
  c.task.min_ops = 1
  c.task.max_ops = 2
  c.task.max_operand = 9
  c.task.seed = 1234
  c.task.max_prompt_len = 16
  # A bad data row (field missing or empty, not UTF-8, prompt over max_prompt_len) stops the run
  # naming file, row and field; true: skip such rows, warn and count them (data/skipped_rows).
  c.task.skip_bad_rows = False
  # Prompt template of the synthetic tasks (prl_jax.data.templates): "plain" for the small
  # policies trained here, "arithmetic_chat" for instruct models (their chat template).
  c.task.template = "plain"
  # SFT demonstrations: "solver" (each example's reference solution), "buggy" (the register
  # task's buggy demonstrator, task.register.*; prl_jax.data.register) or "uniform" (countdown: a
  # solution drawn uniformly among all of a problem's; prl_jax.data.countdown_solutions).
  c.task.demonstrator = "solver"
  # Countdown (task.name="countdown"): keep only problems with at least min_solutions distinct
  # solutions (prl_jax.data.countdown.count_solutions; 0 keeps all).
  c.task.countdown = ml_collections.ConfigDict()
  c.task.countdown.min_solutions = 0
  # The register-chain task (task.name="register"): the demonstrator's hidden bug types (fixed by
  # bug_seed), bug operations per chain, and the demonstrator's error rates.
  c.task.register = ml_collections.ConfigDict()
  c.task.register.bug_seed = 0
  c.task.register.num_bugs = 5
  # "op": the bugs are (operation, operand) types; "state": (previous value, operation, operand)
  # triples, num_bugs of the 180 (many rare bugs; prl_jax.data.register.bug_types).
  c.task.register.bug_keys = "op"
  # "add": +d / -d mod 10; "table": each operation symbol names a hidden random permutation of
  # the digits (a lookup table, nothing to generalise from).
  c.task.register.rule = "add"
  # A bug writes the right value + s, s in 1..max_shift fixed per bug (9: a random wrong digit per
  # bug; 0: a fresh random wrong digit each time, so at bug_rate 0.9 the demonstrator writes each
  # of the ten digits of a bug cell with probability 0.1: it does not know the cell).
  c.task.register.max_shift = 2
  # hard_bugs > 0: chains are easy (share easy_share; min..max_bugs bugs of one half of the bugs)
  # or hard (hard_bugs bugs of the other half, seen in no easy chain); state keys only.
  c.task.register.hard_bugs = 0
  c.task.register.easy_share = 0.3
  c.task.register.min_bugs = 1
  c.task.register.max_bugs = 4
  c.task.register.bug_rate = 0.7
  c.task.register.slip_rate = 0.02
  # Columns of the trl data layout (task.name="trl"): the prompt (text fed as is, or chat
  # messages) and the reference answer ("": "solution" if present, else "answer").
  c.task.prompt_column = "prompt"
  c.task.answer_column = ""
  c.task.verify_workers = -1  # -1: math answers in a process pool, synthetic tasks inline; 0: inline; n: n workers
  # Reward functions (docs/data_and_rewards.md): "path.py:name" in verl's compute_score(data_source,
  # solution_str, ground_truth, extra_info) or TRL's f(completions, **kwargs) form, several
  # comma-separated, "verify" for the task's verifier; "" = the verifier alone. Each is logged as
  # reward/<name>; the outcome is their weighted sum (reward_weights: comma-separated, "" = 1 each).
  c.task.reward_fn = ""
  c.task.reward_weights = ""

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by the other axes
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.num_devices = 0  # 0: every device; n: the first n (e.g. one device of a test machine)
  # Logical-axis rules as data: (logical name, mesh axes) pairs, the first rule for a name wins
  # (prl_jax.sharding). E.g. tensor parallelism off for the MLP: put ("mlp", None) first, or on
  # the command line --config.mesh.rules="(('mlp', None), ...)" with every logical axis listed.
  c.mesh.rules = DEFAULT_RULES

  c.rollout = ml_collections.ConfigDict()
  c.rollout.prompts_per_step = 16
  c.rollout.n = 4  # responses per prompt (K in PRIME, n in PRL)
  c.rollout.max_new_tokens = 32
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.rollout.max_rows = 0  # responses per sampler call (bounds the KV cache); 0 = the whole batch
  # Between the decode's cache blocks, move the rows still writing to a smaller batch once at
  # most half are left: same tokens, finished rows stop costing compute (pays when lengths
  # spread; a host sync per block; single device only). docs/benchmarks.md, "Decode early exit".
  c.rollout.compact_rows = False
  # Sampler calls run at once, each on a share of a call's prompts and drawing what the whole
  # call would (same tokens); 0 = auto: 2 on a CPU backend with one device (a decode keeps about
  # 1.5 of 2 cores busy), else 1. docs/benchmarks.md, "Sampler lanes".
  c.rollout.lanes = 0

  # Accuracy band and truncation filters on groups, refilled from further prompts (PRIME section 3).
  c.filter = ml_collections.ConfigDict()
  c.filter.enable = False
  c.filter.acc_lo = 0.2
  c.filter.acc_hi = 0.8
  c.filter.drop_truncated = False
  # Rounds of prompts_per_step * oversample prompts until prompts_per_step groups pass; surplus
  # accepted prompts are sampled again first at the next step (the official PRIME trainer keeps
  # sampling without a bound). A step that hits the bound warns, counts filter/rounds_exhausted
  # and is topped up with rejected groups.
  c.filter.max_rounds = 4
  c.filter.oversample = 1  # prompts per round, as a multiple of prompts_per_step

  c.algo = ml_collections.ConfigDict()
  c.algo.gamma = 1.0
  c.algo.lam = 1.0  # GAE lambda (ppo)
  c.algo.steps = ml_collections.ConfigDict()
  c.algo.steps.mode = "token"  # token whole fixed delimiter
  c.algo.steps.length = 1
  c.algo.steps.delimiter = "\n"
  # A step scorer "path.py:name", f(response, example, steps) -> one score per step: a rule-based
  # or external PRM feeding method=oracle's step rewards (instead of the task's step checker) and
  # method=erprm's solution scores (instead of algo.erprm.prm_dir); "" = off.
  c.algo.steps.score_fn = ""
  c.algo.rloo = ml_collections.ConfigDict()
  c.algo.rloo.whiten = False  # true: masked whitening over the batch (PRIME's RLOO baseline)
  c.algo.ppo = ml_collections.ConfigDict()
  c.algo.ppo.value_clip = 0.5  # critic: V clipped to old V +- this (verl cliprange_value); 0: off
  c.algo.prime = ml_collections.ConfigDict()
  c.algo.prime.beta = 0.05
  c.algo.prime.mode = "code"  # code | paper
  c.algo.prime.granularity = "token"  # token | whole | step
  c.algo.prime.base = "rloo"  # rloo | grpo | reinforce
  c.algo.prime.double_forward = False
  # Rows per PRM optimizer step (official dp_prime.py: the PRM walks the batch in mini-batches,
  # mini-batch k scored by the PRM after k-1 updates); 0: the policy's train.mini_batch_size.
  c.algo.prime.prm_mini_batch_size = 0
  # Code-mode normalisation by the largest |return-to-go| within each of this many contiguous
  # shards of the batch (the official trainer: per data-parallel worker); 1: the whole batch.
  c.algo.prime.norm_shards = 1
  # method=oracle: weight of the checker's process source against the outcome's. 1 = PRIME's
  # code mode (returns added 1:1 after the process scores are divided by the batch's largest
  # |return-to-go|, so one line of K is worth ~1/K of a success); K makes a line worth a success.
  c.algo.oracle = ml_collections.ConfigDict()
  c.algo.oracle.coef = 1.0
  c.algo.prl = ml_collections.ConfigDict()
  c.algo.prl.eta = 100.0
  c.algo.prl.mode = "orm"  # orm | prm
  # rePIRL (docs/algorithms.md): code = the official recipe (tanh-MLP reward head on a copy of the
  # policy, pooled length-normalised IRL loss, token advantages); implicit = the earlier
  # reconstruction (r = beta log(pi_phi/pi_ref), RLOO on r_o + lam R, one PRM step per RL step).
  c.algo.repirl = ml_collections.ConfigDict()
  c.algo.repirl.mode = "code"  # code | implicit
  c.algo.repirl.lam = 0.05  # weight of the process term (official Qwen2.5-3B run: 0.05)
  c.algo.repirl.beta = 0.05  # implicit mode: r_phi = beta log(pi_phi / pi_ref)
  c.algo.repirl.pseudo_experts = True  # rollouts scored > 0.99 join the demonstrations as experts
  c.algo.repirl.head_width = 1024  # code mode: hidden width of the reward head (official 1024)
  c.algo.repirl.pool_size = 1  # code mode: consecutive RM-batch rows sharing one softmax
  c.algo.repirl.rm_mini_batch_size = 32  # code mode: RM-batch rows per RM step; 0: whole batch
  # Demonstration rows per prompt in the RM batch; 0: code mode pairs one with every rollout
  # (the official batch), implicit mode takes one per prompt.
  c.algo.repirl.demos_per_prompt = 0
  c.algo.raft = ml_collections.ConfigDict()
  c.algo.raft.keep_per_prompt = 1
  # ER-PRM (docs/algorithms.md, ER-PRM): a PRM read at step ends through the logits of two tokens,
  # labelled offline from Monte Carlo completions; in RL it picks RAFT's samples.
  c.algo.erprm = ml_collections.ConfigDict()
  c.algo.erprm.prm_dir = ""  # a trained ER-PRM in HF layout (the `erprm` method needs one)
  c.algo.erprm.eta = 2.0  # label temperature: -> 0 soft labels, -> inf hard labels
  c.algo.erprm.num_completions = 16  # Monte Carlo completions per step prefix
  c.algo.erprm.plus_token = "+"
  c.algo.erprm.minus_token = "-"
  c.algo.erprm.agg = "min"  # min | product | last | mean over step scores
  # `prl-jax erprm`: the HF checkpoint every PRM starts from ("" = the SFT policy, the paper's
  # recipe); any architecture with the policy's vocabulary (e.g. a larger verifier).
  c.algo.erprm.prm_init = ""
  # `prl-jax erprm` on step labels from files instead of Monte Carlo labels (docs/data_and_rewards.md):
  # TRL stepwise-supervision rows (prompt, completions, labels) or Math-Shepherd rows (input with
  # data_tag after each step, label with +/- in its place); format "auto" tells them by columns.
  c.algo.erprm.prm_data = ""
  c.algo.erprm.prm_data_format = "auto"  # auto | trl | math_shepherd
  c.algo.erprm.data_tag = "ки"  # the step tag in Math-Shepherd-style data
  # The PRM reads step k at this tag inserted after the step (e.g. " ки", as Math-Shepherd's and
  # ER-PRM's PRMs are read); "" = at the step's own last token, nothing inserted.
  c.algo.erprm.step_tag = ""
  c.algo.loss = ml_collections.ConfigDict()
  c.algo.loss.clip_low = 0.2
  c.algo.loss.clip_high = 0.2
  c.algo.loss.dual_clip = 0.0  # 0: off; PRL uses 3.0
  c.algo.loss.agg = "token-mean"
  c.algo.loss.entropy_coef = 0.0
  c.algo.loss.kl_coef = 0.0
  c.algo.loss.kl_kind = "k3"

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-5
  c.optim.schedule = "constant"  # constant | cosine | linear, over train.steps RL steps
  c.optim.warmup_steps = 0  # RL steps (a step's epochs x mini-batches share its rate)
  c.optim.weight_decay = 0.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.grad_clip = 1.0
  c.optim.prm_lr = 1e-5
  c.optim.prm_grad_clip = 10.0
  c.optim.prm_weight_decay = -1.0  # the PRM's AdamW weight decay; < 0: optim.weight_decay
  c.optim.value_lr = 1e-5

  c.train = ml_collections.ConfigDict()
  c.train.steps = 20
  c.train.ppo_epochs = 1
  c.train.mini_batch_size = 0  # responses per policy update; 0 = the whole batch
  c.train.micro_batch_size = 0  # responses per forward/backward; 0 = the mini-batch
  c.train.logprob_micro_batch_size = 0  # responses per log-prob forward; 0 = micro_batch_size
  c.train.logprob_chunk = 0  # sequence chunk of the log-prob projection; 0 = whole sequence
  # Gradients of each policy/value/PRM mini-batch taken as this many row shares at once on host
  # threads, then summed (the same update up to float rounding; no forward holds more rows than a
  # micro-batch), and the log-prob passes as row shares; 0 = auto: 2 on a CPU backend with one
  # device (an update keeps about 1.9 of 2 cores busy), else 1. docs/benchmarks.md, "Update
  # lanes".
  c.train.update_lanes = 0
  # The rollout.n responses of a prompt share one forward of the prompt in the old/reference
  # log-prob passes and the policy update (same log-probs and gradients; mini- and micro-batches
  # then take whole groups). Applies when those batch sizes are multiples of rollout.n, on the
  # plain attention path (not model attention_impl="fused" or attention_chunk > 0). A run
  # recorded before this key resumes with it on: the same log-probs and gradients, but with
  # several mini-batches or epochs its shuffle then moves whole groups instead of single rows.
  c.train.share_prompts = True
  # Old-policy log-probs: "auto" (the update's own forward, stop-gradient, when one optimizer
  # step per RL step runs at the sampling parameters and only the loss reads them, i.e.
  # ppo_epochs = 1 and one mini-batch, or RAFT's NLL; else "forward"), "forward" (a
  # teacher-forced pass before the update) or "sampler" (the rollout's own, no second forward;
  # only at temperature 1, untruncated, float32, where the two agree to ~1e-6). For groups the
  # accuracy filter buffered at an earlier step, "auto" and "forward" give the current policy's
  # (PRIME's trainer recomputes them), "sampler" the policy that drew them (the ratio then also
  # weighs their staleness).
  c.train.old_logp_source = "auto"
  # A NaN/inf loss or gradient norm stops the run (RL and SFT) before that step is saved; true:
  # drop such an update instead (state kept, data position advances), counted as
  # train/skipped_updates. RL then keeps a device copy of the state during each step.
  c.train.skip_nonfinite = False

  c.sft = ml_collections.ConfigDict()
  c.sft.steps = 300
  c.sft.batch_size = 32
  c.sft.lr = 3e-3
  c.sft.warmup_steps = 20
  # 0: the demonstrations are the training split's problems (task.min_ops..task.max_ops
  # operations). A synthetic task's SFT can reach longer chains than the RL runs train on
  # (task.min_ops..sft.max_ops), so a held-out split of longer chains asks whether what RL fixed
  # carries over rather than whether the policy generalises in length.
  c.sft.max_ops = 0

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 0  # 0: only at the end
  c.eval.num_problems = 64
  c.eval.n = 4
  c.eval.temperature = 1.0
  c.eval.heldout_max_new_tokens = 96  # --split heldout: longer chains (solutions reach ~80 tokens)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 10
  c.checkpoint.keep = 3
  c.checkpoint.best_metric = ""
  c.checkpoint.resume = True
  c.checkpoint.overwrite = False  # true: remove an earlier run's outputs from the workdir first
  c.checkpoint.save_hf = False
  # Keys (comma-separated, shell patterns allowed) that may differ from WORKDIR/config.json when
  # resuming; other changes are refused (prl_jax.run.config_record lists the always-allowed ones).
  c.checkpoint.allow_changes = ""

  c.log = ml_collections.ConfigDict()
  c.log.every = 1  # a metrics row every k steps (eval steps, the first and the last always)
  c.log.tensorboard = True
  c.log.progress = True
  # Weights & Biases (the optional wandb extra): every row, and the sample tables. wandb_mode:
  # "offline" writes the run under WORKDIR/wandb without network (`wandb sync` later), "" leaves
  # it to wandb (WANDB_MODE). The run id comes from the workdir, so a resume continues it.
  c.log.wandb = False
  c.log.wandb_project = "prl_jax"
  c.log.wandb_name = ""  # "" = the workdir's name
  c.log.wandb_mode = ""
  # Every k RL steps (0 = never), log.num_samples rollouts (prompt, response, reward, per-step
  # process rewards) to WORKDIR/samples.jsonl and a wandb table.
  c.log.samples_every = 0
  c.log.num_samples = 4
  return c

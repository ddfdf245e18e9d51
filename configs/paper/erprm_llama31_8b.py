"""ER-PRM (arXiv 2412.11006) in RL: RAFT on an 8B Llama policy, samples picked by a frozen ER-PRM.

    prl-jax train --workdir gs://BUCKET/runs/erprm --config \\
        configs/paper/erprm_llama31_8b.py:hf_dir=/ckpt/policy,prm_dir=/ckpt/er-prm-llama3.1-8b,train_file=/data/gsm8k/train.jsonl,eval_file=/data/gsm8k/test.jsonl

The ER-PRM itself (a Llama-3.1-8B trained on entropy-regularised Monte Carlo labels) is trained
beforehand and named by `prm_dir`; this config is the paper's RLHF experiment, where the PRM
scores 16 samples per prompt and the best one is fine-tuned on.

Sources ("A5" = docs/algorithms.md, ER-PRM; "A8" = its headline results; "code" = the official ER-PRM code):
  PRM          a causal LM read at step ends through the logits of "+" and "-"; a solution's score
               is the minimum over its step scores (A5; code RAFT/rso_reward.py uses min); the
               PRM is Meta-Llama-3.1-8B fine-tuned on the labels (code prm/kl_math_reward_ce.sh).
               eta only shapes the offline labels (A5) and is kept at the base default here.
  RAFT         sample 16 responses per prompt at temperature 1, keep the best by the PRM, SFT on
               it (A5); 3 iterations (A5) of 20,000 MetaMathQA prompts each, at most 512 new
               tokens, top-p 1 (code RAFT/get_samples.sh, rso_generate.py).
  SFT step     lr 5e-7, cosine schedule, 2 epochs over each iteration's kept samples, batch
               32 per device x 4 GPUs = 128 (code RAFT/sft.sh).
  policy       an 8B Llama: code RAFT/run_expand_raft.sh starts RAFT from Meta-Llama-3-8B-Instruct,
               whose layers have the shapes of the `llama-3.1-8b` preset (RAFT/iterative_rso.sh
               uses a MetaMath Mistral-7B instead); `hf_dir` decides.
  evaluation   greedy accuracy on GSM8K test and MATH500 (code RAFT/evaluate.sh, temperature 0);
               A8: >1% over other PRMs under RAFT.

Deliberate differences:
  - Online RAFT: every step samples 128 prompts x 16, keeps the best response of each prompt
    (128 = the code's SFT batch) and takes `ppo_epochs = 2` passes over them, instead of three
    offline rounds of (sample 20,000 prompts, then 2 SFT epochs). 469 steps = 3 x 20,000 / 128
    prompts; the cosine schedule spans the whole run instead of restarting per round.
  - Prompts from GSM8K/MATH training files (layouts `gsm8k` / `math`): MetaMathQA, the code's
    prompt set, is an augmentation of those two and has no loader here.
  - Step ends at newlines; the code inserts a dedicated step tag ("ки") into the text it scores.
  - AdamW weight decay 0, grad clip 1.0; micro-batch 64, log-prob chunk 512, prompt length 512.
"""

from configs.paper.common import paper_config

BENCHMARKS = ("gsm8k", "math500")


def get_config(arg=None):
  c, args = paper_config(arg, preset="llama-3.1-8b", layout="gsm8k",
                         extra_args={"prm_dir": ""})
  c.method = "erprm"
  c.algo.erprm.prm_dir = args["prm_dir"]
  c.algo.erprm.agg = "min"
  c.algo.erprm.plus_token = "+"
  c.algo.erprm.minus_token = "-"
  c.algo.erprm.num_completions = 16
  c.algo.raft.keep_per_prompt = 1
  c.algo.steps.mode = "delimiter"
  c.algo.steps.delimiter = "\n"

  c.task.max_prompt_len = 512
  c.rollout.prompts_per_step = 128
  c.rollout.n = 16
  c.rollout.max_new_tokens = 512
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.filter.enable = False

  c.algo.loss.kl_coef = 0.0
  c.algo.loss.entropy_coef = 0.0

  c.optim.lr = 5e-7
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0

  c.train.steps = 469
  c.train.ppo_epochs = 2
  c.train.mini_batch_size = 0  # one update per pass over the 128 kept responses
  c.train.micro_batch_size = 64

  c.eval.every = 50
  c.eval.num_problems = 1319  # the GSM8K test set
  c.eval.n = 1
  c.eval.temperature = 0.0
  c.checkpoint.every = 50
  return c

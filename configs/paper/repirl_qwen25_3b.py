"""rePIRL (arXiv 2602.07832): Qwen2.5-3B-Instruct with a process reward model learned by inverse RL.

    prl-jax train --workdir gs://BUCKET/runs/repirl --config \\
        configs/paper/repirl_qwen25_3b.py:hf_dir=/ckpt/Qwen2.5-3B-Instruct,train_file=/data/numina,eval_file=/data/math500

The settings are the official code's (github.com/ucsb-mlsec/irl, recipe/irl, commit 0159023:
run_irl_qwen.sh, config/irl_trainer.yaml, irl_ray_trainer.py, irl_dp_rm.py, rm.py), as
docs/algorithms.md (rePIRL) describes them.

Sources:
  model        Qwen2.5-3B-Instruct (the paper: math average 33.5 vs 31.7 RLOO, 30.7 with an
               MCTS-labelled PRM).
  reward model algo.repirl.mode = "code": Linear(2048, 1024)-ReLU-Linear(1024, 1024)-ReLU-
               Linear(1024, 1)-tanh on the final hidden states of a full copy of the policy,
               backbone trained too, no reference model (rm.py).
  experts      the demonstrations and every rollout the verifier scores above 0.99
               (pseudo-experts, irl_ray_trainer.py `scores > 0.99`); the other rollouts are the
               importance samples.
  RM batch     a demonstration beside every rollout (256 + 256 rows), interleaved; mini-batches of
               32 rows, one AdamW step each (16 RM steps per RL step), one epoch, pools of one row
               (micro-batch 1: w = 1), grad clip 10, weight decay 0, constant lr (irl_dp_rm.py,
               run_irl_qwen.sh).
  order        RM update, then every rollout re-scored by the updated RM, then advantages.
  advantages   token level: outcome and Z-normalised process returns, leave-one-out per token
               index within each group, A = LOO(Go) + 0.05 LOO(Gp), whitened over the batch
               (irl_core_algos.py; reward_gt_coef 1, reward_dpo_coef 0.05).
  policy       PPO clip 0.2, dual clip 3, seq-mean-token-mean, entropy bonus 0.001, no KL, lr 5e-7
               constant, AdamW weight decay 0.01 (verl's actor default), grad clip 1.0, n = 4 at
               temperature 1, prompt/response 1536/3100, mini-batch 128 responses (2 updates per
               step, one epoch) (run_irl_qwen.sh).
  filter       accuracy band [0.2, 0.8] with 2x oversampling: one draw of 128 prompts, the 64 with
               passing groups first, topped up with failing ones (filter_and_downsample).
  evaluation   greedy validation every 5 steps (trainer.test_freq = 5); greedy pass@1 on MATH500,
               AIME 2024, Minerva, AMC, OlympiadBench (the official README).

Deliberate differences:
  - RM learning rate. The official 3e-8 runs on float16 parameters with no float32 master copy
    (model_dtype float16), where most updates of that size round away and the effective step is
    unrelated to the nominal one: it is numerically degenerate, not a setting to copy. Here the
    RM trains in float32 and optim.prm_lr is a tuning parameter (1e-6 below, PRIME's PRM rate;
    tune it on the RM's separation, `repirl/reward_correct` - `repirl/reward_failed`).
  - Data. The official run samples 7k math + 7k coding problems from PRIME's Eurus-2-RL-Data
    with four demonstrations per problem written by Claude-3.7-Sonnet (the official README);
    here math prompts with the data set's own solutions as demonstrations (layout `numina`:
    NuminaMath-CoT, written by a strong model), one per problem repeated beside each of its 4
    rollouts.
  - Oversampling: `filter.oversample = 2` with one round; surplus passing prompts are sampled
    again first at the next step rather than dropped as the official trainer does.
  - 240 steps (the official script runs two epochs over its data), checkpoints every 16 steps,
    micro-batch 64, log-prob chunk 512: ours.
"""

from configs.paper.common import paper_config

BENCHMARKS = ("aime24", "amc", "math500", "minerva", "olympiadbench")


def get_config(arg=None):
  c, _ = paper_config(arg, preset="qwen2.5-3b", layout="numina")
  c.method = "repirl"
  c.task.max_prompt_len = 1536
  c.rollout.prompts_per_step = 64
  c.rollout.n = 4
  c.rollout.max_new_tokens = 3100
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0

  c.filter.enable = True
  c.filter.acc_lo = 0.2
  c.filter.acc_hi = 0.8
  c.filter.drop_truncated = False
  c.filter.oversample = 2
  c.filter.max_rounds = 1

  c.algo.repirl.mode = "code"
  c.algo.repirl.lam = 0.05
  c.algo.repirl.head_width = 1024
  c.algo.repirl.pool_size = 1
  c.algo.repirl.rm_mini_batch_size = 32
  c.algo.repirl.demos_per_prompt = 0  # one beside every rollout
  c.algo.repirl.pseudo_experts = True

  c.algo.gamma = 1.0
  c.algo.loss.clip_low = 0.2
  c.algo.loss.clip_high = 0.2
  c.algo.loss.dual_clip = 3.0
  c.algo.loss.agg = "seq-mean-token-mean"
  c.algo.loss.entropy_coef = 0.001
  c.algo.loss.kl_coef = 0.0

  c.optim.lr = 5e-7
  c.optim.weight_decay = 0.01
  c.optim.grad_clip = 1.0
  c.optim.prm_lr = 1e-6  # official 3e-8 in float16: degenerate (above); a float32 tuning parameter
  c.optim.prm_grad_clip = 10.0
  c.optim.prm_weight_decay = 0.0
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0

  c.train.steps = 240
  c.train.ppo_epochs = 1
  c.train.mini_batch_size = 128
  c.train.micro_batch_size = 64

  c.eval.every = 5
  c.eval.num_problems = 500
  c.eval.n = 1
  c.eval.temperature = 0.0
  c.checkpoint.every = 16
  return c

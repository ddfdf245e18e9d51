"""Reproduction presets: which arms and seeds, how many steps, how big each evaluation is.

`prl-jax reproduce --preset demo|mini|lab` (`prl_jax.reproduce.pipeline`); everything a preset
does not say comes from its configs folder (configs/mini, configs/lab) unchanged.
"""

from __future__ import annotations

import dataclasses

from prl_jax.config import ConfigError
from prl_jax.eval.prm_experiment import ErprmOptions
from prl_jax.reproduce.gates import LabGates

METHODS = ("rloo", "grpo", "reinforce", "ppo", "raft", "prime", "prl", "frpo", "repirl")
# The process-reward lab's arms (docs/lab.md), each configs/lab/<arm>.py. sft_demos_rloo starts
# from an extra SFT stage (configs/lab/sft_demos.py) instead of the lab SFT.
LAB_ARMS = ("rloo", "grpo", "grpo_kl", "oracle", "prime", "prl", "frpo", "repirl",
            "sft_demos_rloo", "erprm", "erprm_hard")
# The lab's RAFT arms whose pick is a PRM of the ER-PRM stage: (arm, that PRM's directory under
# WORKDIR/erprm). They wait for the stage: ER-PRM (eta = 2) and its hard-label control.
LAB_PRM_ARMS = (("erprm", "prm_eta2"), ("erprm_hard", "prm_hard"))
KNOWN_ARMS = tuple(dict.fromkeys(METHODS + LAB_ARMS))
SPLITS = ("eval", "heldout")


def evaluated_splits(heldout_problems: int) -> tuple[str, ...]:
  """The splits a preset evaluates its final policies on: no held-out split at 0 problems."""
  return SPLITS if heldout_problems else SPLITS[:1]


@dataclasses.dataclass(frozen=True)
class Preset:
  """The size of a reproduction; everything else comes from configs/mini.

  Attributes:
    name: preset name.
    methods: RL methods (configs/mini/<method>.py each).
    seeds: RL seeds; every method runs every seed.
    rl_steps: RL steps of every run (train.steps).
    window: smoothing window (steps) of the training reward in the sample-efficiency analysis.
    eval_n: samples per problem of the final evaluation (mean@n, pass@n; plus one greedy decode).
    eval_problems: problems of the in-distribution eval split.
    heldout_problems: problems of the held-out split (longer arithmetic chains); 0 leaves the
      held-out evaluation out (a policy that never saw the longer chains reads 0 there).
    heldout_max_new_tokens: response limit on the held-out split (its solutions reach 80 tokens).
    erprm: sizes of the ER-PRM experiment.
    erprm_overrides: config overrides of the ER-PRM stage (its PRM learning rate).
    erprm_config: the config (<configs>/<erprm_config>.py) the ER-PRM stage runs with.
    overrides: config overrides applied to every stage alike (e.g. a smaller batch for a test);
      empty for the real presets, so the configs/mini budget is what runs.
    sft_overrides: config overrides of the SFT stage only.
    configs: the folder under configs/ the arms' files come from ("mini" or "lab").
    arm_stages: (arm, SFT config) pairs: that arm starts from the policy of an extra SFT stage
      (<configs>/<SFT config>.py, initialised from the main SFT policy) instead of the main one.
    gates: the lab's gates G0-G3, run (or read back) before any arm; their SFT is the arms' SFT
      and their RL runs are the first gates.rl_steps steps of the arms' seed-0 runs.
    heldout_overrides: config overrides of the held-out evaluations only.
    kl_problems: eval problems whose eval_n samples of the final policy estimate its KL to the
      policy it started from (0: no KL stage).
    claims: which claims the report judges ("mini": the z-test of claims.py; "lab": the t-tests
      of lab_claims.py).
    prm_arms: (arm, PRM directory under WORKDIR/erprm) pairs: that arm scores its rollouts with
      a PRM the ER-PRM stage trains (`algo.erprm.prm_dir`), so its runs start once that stage
      has finished.
  """

  name: str
  methods: tuple[str, ...]
  seeds: tuple[int, ...]
  rl_steps: int
  window: int
  eval_n: int = 8
  eval_problems: int = 64
  heldout_problems: int = 64
  heldout_max_new_tokens: int = 96
  erprm: ErprmOptions | None = ErprmOptions()
  erprm_overrides: tuple[str, ...] = ("optim.prm_lr=0.001",)
  erprm_config: str = "sft"
  overrides: tuple[str, ...] = ()
  sft_overrides: tuple[str, ...] = ()
  configs: str = "mini"
  arm_stages: tuple[tuple[str, str], ...] = ()
  gates: LabGates | None = None
  heldout_overrides: tuple[str, ...] = ()
  kl_problems: int = 0
  claims: str = "mini"
  prm_arms: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    unknown = sorted(set(self.methods) - set(KNOWN_ARMS))
    if unknown:
      raise ConfigError(f"Preset {self.name!r}: unknown methods {unknown}; choose from "
                        f"{KNOWN_ARMS}.")
    if self.claims not in ("mini", "lab"):
      raise ConfigError(f"Preset {self.name!r}: claims must be 'mini' or 'lab'.")
    if self.gates is not None and self.gates.rl_steps > self.rl_steps:
      raise ConfigError(f"Preset {self.name!r}: the gate runs ({self.gates.rl_steps} steps) are "
                        f"the arms' first steps; rl_steps ({self.rl_steps}) must not be shorter.")
    if not self.methods or not self.seeds:
      raise ConfigError(f"Preset {self.name!r} needs at least one method and one seed.")
    if len(set(self.seeds)) != len(self.seeds):
      raise ConfigError(f"Preset {self.name!r} repeats a seed: {self.seeds}.")
    for field in ("rl_steps", "window", "eval_n", "eval_problems", "heldout_max_new_tokens"):
      if getattr(self, field) < 1:
        raise ConfigError(f"Preset {self.name!r}: {field} must be >= 1, got "
                          f"{getattr(self, field)}.")
    if self.heldout_problems < 0:
      raise ConfigError(f"Preset {self.name!r}: heldout_problems must be >= 0 (0: no held-out "
                        f"evaluation), got {self.heldout_problems}.")
    stray = sorted(set(arm for arm, _ in self.prm_arms) - set(self.methods))
    if stray:
      raise ConfigError(f"Preset {self.name!r}: prm_arms names {stray}, which are not among its "
                        "methods.")
    if self.prm_arms and self.erprm is None:
      raise ConfigError(f"Preset {self.name!r}: the arms {[a for a, _ in self.prm_arms]} need the "
                        "PRMs of the ER-PRM stage, which this preset leaves out (erprm=None); "
                        "use `without_erprm()` to leave both out.")
    if self.gates is not None and (self.gates.overrides != self.overrides or self.sft_overrides):
      # The gates' SFT and RL runs are the arms' own only when they change the configs alike.
      raise ConfigError(f"Preset {self.name!r}: with gates, put every override in both "
                        "`overrides` and `gates.overrides` (equal), none in `sft_overrides`.")

  @property
  def splits(self) -> tuple[str, ...]:
    """The splits every final policy is evaluated on."""
    return evaluated_splits(self.heldout_problems)

  def without_erprm(self) -> "Preset":
    """This preset without the ER-PRM stage and the arms that need its PRMs (`--no-erprm`)."""
    needs = {arm for arm, _ in self.prm_arms}
    return dataclasses.replace(self, erprm=None, prm_arms=(),
                               methods=tuple(m for m in self.methods if m not in needs))

  def prm_dir(self, arm: str) -> str | None:
    """The directory under WORKDIR/erprm of the PRM `arm` picks with (None: it needs none)."""
    return dict(self.prm_arms).get(arm)

  def init_stage(self, arm: str) -> str | None:
    """The extra SFT stage `arm` starts from (None: the main SFT policy)."""
    return dict(self.arm_stages).get(arm)


# Sizes from `prl-jax reproduce --preset demo` on a shared 2-core CPU (its report's wall-time
# table): 6 min 13 s in all with an empty compilation cache, of which SFT 18 s, ER-PRM 95 s, and
# one RL step of all nine methods together about 8 s after the first (medians 0.4-0.8 s, PRIME
# 1.3-2 s with its refill rounds, rePIRL 2.2 s); an eval takes about 1 s per policy and split.
# mini: 4 seeds x 150 steps x 8.3 s = 83 min of RL, plus about 20 s of compile and 10 s of eval
# per run (18 min for 36 runs) and 3 min of ER-PRM (docs/erprm.md): about 1h45 on an idle
# machine, under 3 h with the CPU shared.
#
# lab (`prl-jax reproduce --preset lab --jobs 2`): measured on this project's shared 2-core CPU
# while two other reproductions ran on it (load average 5-6), with random initial weights (the
# accuracy filter then rejects every group, so every step samples its 4 refill rounds: 512
# responses, the most a step can cost), e.g.
#   prl-jax train --config configs/lab/rloo.py --workdir /tmp/f_rloo --config.init_from= \
#     --config.train.steps=6 --config.mesh.num_devices=1   (time/step_s in metrics.jsonl)
# RLOO 5.3-5.8 s per step after the first (27 s with compilation), the oracle 5.4-5.9 s, PRIME
# 7.6-7.8 s, rePIRL 15-20 s (load average 9.5 by then). Not measured: GRPO, GRPO+KL, PRL, FRPO and
# sft_demos_rloo, taken as RLOO's ~5.5-6 s. One step of the nine arms ~63 s, x 3 seeds ~190 s of
# one core; with --jobs 2, ~95 s of wall time per step. The lab SFTs ran at 1-2 s per step on the
# same loaded machine: the clean SFT (then 3000 steps, batch 64) ~50 min, the buggy SFT that
# continues it (800 steps) 7-14 min measured later on a lighter load, in turn. On an otherwise
# idle 2-core Xeon with one probe SFT beside them: the clean SFT (now 1500 steps) 818 s, the
# buggy SFT 414 s; the gates' RL runs two at a time at ~4.3 s per RLOO step.
# Budget: ~60 min SFTs + ~10 min gate RL (RLOO, oracle, PRIME seed 0, 2 at a time) + 60 steps x
# 95 s = 95 min of arms less the ~10 min the gate runs already did + ~2 min sft_demos (60 steps
# of 16) + ~20 min of compilation, evaluations (256 + 256 problems x 17 decodes per run) and KL
# stages: ~3 h. Hence 60 RL steps, G2's step, so the three gate runs are already the
# seed-0 runs of their arms. On a machine not shared with other runs it should be well under.
# Measured so (docs/lab.md, "The arms past G2"; the clean SFT then 1500 steps): gates 30 min,
# arms of 3 seeds 40 min with --jobs 2 on an otherwise idle 2-core Xeon (ER-PRM left out).
# The lab's ER-PRM best-of-N (docs/lab.md): labels from 512 training questions x 4 solutions
# (16 completions per line prefix), 2 seeds of each PRM, 1,500 held-out problems x 64 candidates.
# It needs the SFT policy only (gates G0 and G1), so it also runs when a later gate stops the arms.
# Measured on the shared 2-core Xeon: labels 790 s, the 8 PRMs 73-189 s each (931 s), candidates
# 211-220 s, scoring 160-190 s per PRM (about 25 min), selection and bootstrap about 1 min: about
# 1 h of one worker, which with --jobs 2 runs beside the arms and adds about 30 min to the 3 h
# estimated above (not yet measured as a whole). The two ER-PRM RAFT arms (LAB_PRM_ARMS) start
# once that stage has finished: measured 2.6-2.9 s per step two at a time on an idle 2-core Xeon
# (docs/lab.md, "RAFT on the PRM's pick"), about 9 min of wall time for their 6 runs with
# --jobs 2 once the other arms are done.
LAB_ERPRM = ErprmOptions(label_problems=512, solutions_per_problem=4, prm_steps=400,
                         prm_batch_size=32, eval_problems=1500, n_max=64, draws=100, prm_seeds=2)
# lab-demo: the lab's oracle control in minutes. Smaller steps make the outcome's credit
# assignment noisier, which is where the step checker gains (docs/lab.md, "Outcome RLOO learns as
# fast as the oracle": 4 prompts x 8 per step, the oracle's lines weighted like a success). G0
# and G1 are judged on the lab's 256 eval problems: on 64, the lab's SFT had pass@8 35.9% (G1
# needs 40%; 49.2% on 256).
# Probed from an earlier lab SFT on a 2-core Xeon (two seeds, 30 steps, 49 s per run beside two
# SFTs): the 5-step reward reached 0.5 at steps 16-17 with the oracle and 23-25 with RLOO, and
# stood at 0.71-0.76 against 0.61-0.62 at step 30. G2 (a third of RLOO's steps) still fails
# there, so `make demo` passes --past-failed-gates. The learning rate stays constant: both arms
# still learn at step 30 (5-step reward ~0.86), where the lab's cosine would have cut the rate to
# a quarter by step 20; the decay guards the lab's 60-step runs after they have solved the task
# (configs/lab/budget.py), which the demo's never reach.
LAB_DEMO_OVERRIDES = ("rollout.prompts_per_step=4", "algo.oracle.coef=8",
                      "train.mini_batch_size=32", "train.micro_batch_size=32",
                      "train.logprob_micro_batch_size=32", "optim.schedule=constant")
# The demo's SFTs stay at the arms' chain length (8 operations: 72 positions a row, not the 100
# of 12-operation chains, 0.40 s a step instead of 0.58 on a 2-core EPYC) and are shorter: the
# clean one 900 steps on 2-8 operations (from scratch, seeds 0-3 left its loss plateau at steps
# ~350-550 and passed G0 at 98.7-100%, seed 1 the latest and lowest; at 32 chains a step seed 1
# was still on it at step 1,000), the buggy one 400 steps on 8 (at the demonstrator's entropy from step
# ~100). The held-out split (K = 12) then measures a length the demo's policy never saw
# (docs/lab.md, "The demo").
_EIGHT_OPS = ("task.max_prompt_len=32", "rollout.max_new_tokens=40")
LAB_DEMO_CLEAN_SFT = ("task.max_ops=8", *_EIGHT_OPS, "sft.steps=900")
LAB_DEMO_SFT = ("sft.max_ops=8", *_EIGHT_OPS, "sft.steps=400")
PRESETS = {
    "demo": Preset(
        name="demo", methods=METHODS, seeds=(0,), rl_steps=20, window=5,
        eval_problems=64, heldout_problems=64,
        erprm=ErprmOptions(label_problems=128, solutions_per_problem=4, prm_steps=150,
                           prm_batch_size=32, eval_problems=128, n_max=16, draws=100)),
    "mini": Preset(
        name="mini", methods=METHODS, seeds=(0, 1, 2, 3), rl_steps=150, window=15,
        eval_problems=256, heldout_problems=128,
        erprm=ErprmOptions(label_problems=800, solutions_per_problem=4, prm_steps=500,
                           prm_batch_size=32, eval_problems=512, n_max=16, draws=200)),
    "lab": Preset(
        name="lab", methods=LAB_ARMS, seeds=(0, 1, 2), rl_steps=60, window=15, eval_n=16,
        eval_problems=256, heldout_problems=256, heldout_max_new_tokens=64,
        heldout_overrides=("eval.heldout_max_new_tokens=64",), erprm=LAB_ERPRM,
        erprm_config="erprm", configs="lab",
        arm_stages=(("sft_demos_rloo", "sft_demos"),), gates=LabGates(rl_steps=60),
        kl_problems=64, claims="lab", prm_arms=LAB_PRM_ARMS),
    "lab-demo": Preset(
        name="lab-demo", methods=("rloo", "oracle"), seeds=(0,), rl_steps=30, window=5,
        eval_problems=64, heldout_problems=0, erprm=None, configs="lab",
        overrides=LAB_DEMO_OVERRIDES, claims="lab",
        gates=LabGates(rl_steps=30, gate_step=30, window=5, overrides=LAB_DEMO_OVERRIDES,
                       clean_sft_overrides=LAB_DEMO_CLEAN_SFT, sft_overrides=LAB_DEMO_SFT)),
}


def get_preset(name: str) -> Preset:
  """The preset called `name`, or a ConfigError naming the known ones."""
  if name not in PRESETS:
    raise ConfigError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
  return PRESETS[name]


def parse_seeds(text: str) -> tuple[int, ...]:
  """`--seeds 0,2` -> (0, 2), or a ConfigError saying what --seeds takes."""
  try:
    seeds = tuple(int(part) for part in text.split(","))
  except ValueError:
    raise ConfigError(f"--seeds takes comma-separated integers such as 0,1,2; got {text!r}.")
  if len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise ConfigError(f"--seeds must be distinct non-negative integers; got {text!r}.")
  return seeds

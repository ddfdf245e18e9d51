"""Reproduction presets: which methods and seeds, how many steps, how big each evaluation is.

`prl-jax reproduce --preset demo|mini` (`prl_jax.reproduce.pipeline`); everything a preset does not
say comes from configs/mini unchanged.
"""

from __future__ import annotations

import dataclasses

from prl_jax.config import ConfigError
from prl_jax.eval.prm_experiment import ErprmOptions

METHODS = ("rloo", "grpo", "reinforce", "ppo", "raft", "prime", "prl", "frpo", "repirl")
SPLITS = ("eval", "heldout")


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
    heldout_problems: problems of the held-out split (longer arithmetic chains).
    heldout_max_new_tokens: response limit on the held-out split (its solutions reach 80 tokens).
    erprm: sizes of the ER-PRM experiment.
    erprm_overrides: config overrides of the ER-PRM stage (its PRM learning rate).
    overrides: config overrides applied to every stage alike (e.g. a smaller batch for a test);
      empty for the real presets, so the configs/mini budget is what runs.
    sft_overrides: config overrides of the SFT stage only.
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
  erprm: ErprmOptions = ErprmOptions()
  erprm_overrides: tuple[str, ...] = ("optim.prm_lr=0.001",)
  overrides: tuple[str, ...] = ()
  sft_overrides: tuple[str, ...] = ()

  def __post_init__(self):
    unknown = sorted(set(self.methods) - set(METHODS))
    if unknown:
      raise ConfigError(f"Preset {self.name!r}: unknown methods {unknown}; choose from {METHODS}.")
    if not self.methods or not self.seeds:
      raise ConfigError(f"Preset {self.name!r} needs at least one method and one seed.")
    if len(set(self.seeds)) != len(self.seeds):
      raise ConfigError(f"Preset {self.name!r} repeats a seed: {self.seeds}.")
    for field in ("rl_steps", "window", "eval_n", "eval_problems", "heldout_problems",
                  "heldout_max_new_tokens"):
      if getattr(self, field) < 1:
        raise ConfigError(f"Preset {self.name!r}: {field} must be >= 1, got "
                          f"{getattr(self, field)}.")


# Sizes from `prl-jax reproduce --preset demo` on a shared 2-core CPU (its report's wall-time
# table): 6 min 13 s in all with an empty compilation cache, of which SFT 18 s, ER-PRM 95 s, and
# one RL step of all nine methods together about 8 s after the first (medians 0.4-0.8 s, PRIME
# 1.3-2 s with its refill rounds, rePIRL 2.2 s); an eval takes about 1 s per policy and split.
# mini: 4 seeds x 150 steps x 8.3 s = 83 min of RL, plus about 20 s of compile and 10 s of eval
# per run (18 min for 36 runs) and 3 min of ER-PRM (docs/erprm.md): about 1h45 on an idle
# machine, under 3 h with the CPU shared.
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
}


def get_preset(name: str) -> Preset:
  """The preset called `name`, or a ConfigError naming the known ones."""
  if name not in PRESETS:
    raise ConfigError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
  return PRESETS[name]

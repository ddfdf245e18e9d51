"""Which scorer a verl-format row's `data_source` names (verl's reward-score dispatch, by data set).

verl's RLHFDataset rows carry `data_source` (the data set a row came from), `ability` ("math",
"code", ...) and `reward_model.ground_truth`; verl picks the reward function from `data_source`:
GSM8K's rows are scored one way, MATH's another, PRIME's Numina rows by PRIME's math scorer, code
rows by running test cases. Here every math source maps to a math task of
`prl_jax.rewards.verify.SCORERS` (all read the final answer with math-verify), and a source with
no scorer of ours (code, search, geometry with images) maps to its own name, which the verifier
refuses unless `task.reward_fn` supplies a scorer for it.
"""

from __future__ import annotations

# data_source -> task of a scorer, for the sources verl and PRIME's Eurus-2-RL-Data name.
SOURCE_TASKS = {
  "openai/gsm8k": "gsm8k",
  "gsm8k": "gsm8k",
  "lighteval/MATH": "math",
  "DigitalLearningGmbH/MATH-lighteval": "math",
  "HuggingFaceH4/MATH-500": "math",
  "math": "math",
  "math_dapo": "math",
}
# Prefixes of families of sources: PRIME's Numina subsets (numina_olympiads, numina_cn_k12, ...),
# the AIME sets verl scores like DAPO's math.
SOURCE_PREFIXES = (("numina_", "numina"), ("aime", "math"), ("amc", "math"))
# Sources whose ground truth is not an answer (test cases, retrieval targets): no scorer of ours.
UNSCORED_PREFIXES = ("codecontests", "apps", "codeforces", "taco", "searchR1", "hiyouga/geometry3k")


def source_task(data_source: str | None, ability: str | None) -> str:
  """The task whose scorer grades a row of `data_source` (case of `ability` ignored).

  Known sources map by name or prefix; an unknown source of ability "math" (any case) is graded
  as math; anything else keeps its source name as the task, so only a `task.reward_fn` for that
  name can score it (the verifier says so).
  """
  source = str(data_source or "")
  if source in SOURCE_TASKS:
    return SOURCE_TASKS[source]
  if not source.startswith(UNSCORED_PREFIXES):
    for prefix, task in SOURCE_PREFIXES:
      if source.startswith(prefix):
        return task
    if str(ability or "").lower() == "math":
      return "math"
  return source or str(ability or "unknown")

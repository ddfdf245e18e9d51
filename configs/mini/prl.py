"""PRL (orm mode): GRPO-normalised outcome minus KL-to-go / eta at step ends (newlines)."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "prl"
  c.algo.prl.mode = "orm"
  c.algo.prl.eta = 100.0
  c.algo.steps.mode = "delimiter"
  c.algo.steps.delimiter = "\n"
  c.algo.loss.dual_clip = 3.0
  return c

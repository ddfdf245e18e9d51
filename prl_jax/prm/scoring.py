"""Step scores of solutions under a trained PRM, and solution scores from them.

Solutions are split into steps as the PRM's labels were (its `PrmSpec`), packed like its training
data (`prl_jax.prm.model.pack_solution`) and read at the step ends (`prm_step_scores`); a solution
score aggregates the step scores (`prl_jax.rewards.er_prm.best_of_n`: min, product, last, mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from prl_jax.distributed import to_host
from prl_jax.models.config import ModelConfig
from prl_jax.prm import labels, model
from prl_jax.progress import progress_bar
from prl_jax.rewards.er_prm import best_of_n
from prl_jax.run.batch import make_sequences


_scores_jit = jax.jit(model.prm_step_scores, static_argnums=(0,))


def prm_step_score_lists(model_cfg: ModelConfig, params: Any, spec: model.PrmSpec,
                         tokenizer: Any, problems: Sequence[dict], texts: Sequence[Sequence[str]],
                         finished: np.ndarray, prompt_len: int, response_len: int,
                         *, rows: int = 256, place=None, progress: bool = False,
                         desc: str = "scoring") -> list[list[float]]:
  """Step scores of every candidate, [P*N][K_j], problem-major.

  `problems`, `texts` and `finished` are those of `Candidates`: [P] examples, [P][N] solution
  texts, [P, N] whether each ended with EOS.

  Candidates are split into steps as the PRM's labels were (`spec`), packed like its training
  data (`model.pack_solution`) and scored in fixed-size chunks of `rows` (the last one padded) so
  one program serves the whole set. An ORM has one "step", the last token. `progress` draws a bar
  labelled `desc` on stderr over the candidates.
  """
  plus_id = model.token_id(tokenizer, spec.plus_token, "plus_token")
  minus_id = model.token_id(tokenizer, spec.minus_token, "minus_token")
  encode = lambda text: tokenizer.encode(text)
  prompts, packed = [], []
  for ex, group, done in zip(problems, texts, finished):
    prompt = encode(ex["prompt"])
    for text, fin in zip(group, done):
      steps = labels.split_steps(text, spec.min_step_chars, spec.delimiter)
      ids, ends = model.pack_solution(encode, tokenizer.eos_id, steps, bool(fin), spec.step_tag,
                                      spec.delimiter)
      prompts.append(prompt)
      packed.append((ids, ends[-1:] if spec.kind == "orm" else ends))
  # Per-step encoding can make a response longer than sampled; grow the width once, in 8s.
  width = max([response_len] + [len(ids) for ids, _ in packed])
  width = -(-width // 8) * 8
  place = place or (lambda tree: tree)
  out: list[list[float]] = []
  bar = progress_bar(len(packed), desc, enabled=progress, unit="candidate")
  for start in range(0, len(packed), rows):
    chunk = list(range(start, min(start + rows, len(packed))))
    padded = chunk + [chunk[-1]] * (rows - len(chunk))
    seq = make_sequences([prompts[i] for i in padded], [packed[i][0] for i in padded],
                                 prompt_len, width, tokenizer.pad_id)
    step_end = np.zeros((rows, width), bool)
    for r, i in enumerate(padded):
      step_end[r, packed[i][1]] = True
    scores = to_host(_scores_jit(model_cfg, params, place(seq), place(step_end), plus_id,
                                 minus_id))
    for r, i in enumerate(chunk):
      out.append(scores[r, packed[i][1]].tolist())
    bar.update(len(chunk))
  bar.close()
  return out


def solution_scores(step_lists: Sequence[Sequence[float]], agg: str, shape: tuple[int, int]
                    ) -> np.ndarray:
  """[P, N] solution scores from per-candidate step scores with `best_of_n(agg)`."""
  longest = max(1, max(len(s) for s in step_lists))
  values = np.zeros((len(step_lists), longest), np.float32)
  valid = np.zeros((len(step_lists), longest), bool)
  for i, s in enumerate(step_lists):
    values[i, :len(s)] = s
    valid[i, :len(s)] = True
  return np.asarray(best_of_n(values, agg, valid)).reshape(shape)

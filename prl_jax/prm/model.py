"""Training an ER-PRM: a causal LM read through two token logits at step ends (docs/algorithms.md: ER-PRM).

Zhang et al. 2024, arXiv 2412.11006, section 5 and the official code's PRM recipe. The PRM is a
copy of the SFT policy. Its input is the prompt followed by the solution (and EOS when the solution
ended with one), the layout of `SequenceBatch`: the prompt left-padded to P tokens, the solution
right-padded to N.

Where the PRM is read. The score of step k is read at the step's last token e_k (a response index:
the step's closing newline, or for the final step the last token, EOS when there is one): the
logits at sequence position P + e_k, i.e. the model's next-token logits after it has read the whole
step (those of `Transformer.apply(params, seq.tokens, token_mask=seq.token_mask)[0][:, P + e_k]`).
This is the step-tag position of ER-PRM and Math-Shepherd with the step's own last token as the tag
(no tag token is inserted, so the text the PRM reads is exactly the policy's). A PRM trained with
a step tag (`PrmSpec.step_tag`, e.g. " ки" for Math-Shepherd's and ER-PRM's released PRMs) reads
each step with the tag inserted after it (before its closing delimiter) and is read at the tag's
last token, as those PRMs expect; no EOS follows then. With the logits
z+ and z- of `plus_token` and `minus_token` there,

    score_k = softmax([z+, z-])[0] = sigmoid(z+ - z-)
    loss    = sum_k -[ r_k log score_k + (1 - r_k) log(1 - score_k) ]  /  number of step ends

against the ER-PRM label r_k of `prl_jax.prm.labels` (`er_prm_loss`). The outcome-RM
variant is the same model with a single "step", the last token, labelled with the outcome.

A trained PRM is exported in HF layout (loadable as the policy is) with `prm.json` beside it: the
two tokens, the step splitting and the labels it was trained on, so a scorer can read it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prl_jax.config import ConfigError
from prl_jax.models import hf
from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import Transformer
from prl_jax.ops.checks import shape_errors
from prl_jax.prm.labels import encode_steps
from prl_jax.rewards.er_prm import er_prm_loss, step_scores
from prl_jax.run import updates
from prl_jax.run.batch import SequenceBatch, make_sequences
from prl_jax.run.metrics_file import MetricsWriter
from prl_jax.run.state import ModelState, adamw

PRM_KINDS = ("prm", "orm")
SPEC_FILE = "prm.json"


@flax.struct.dataclass
class PrmBatch:
  """Sequences with their step ends and labels.

  Attributes:
    seq: prompt (left-padded to P) + solution (right-padded to N).
    step_end: [B, N] bool, True at the last token of every labelled step.
    target: [B, N] float32, the label r_k at step ends, 0 elsewhere.
  """

  seq: SequenceBatch
  step_end: jax.Array
  target: jax.Array


@dataclasses.dataclass(frozen=True)
class PrmSpec:
  """What a scorer needs to know about a trained PRM (stored as prm.json beside its weights).

  Attributes:
    name: display name, e.g. "ER-PRM (eta=2.0)".
    kind: "prm" (labels at every step end) or "orm" (one label, the outcome, at the last token).
    label: the eta key of the labels it was trained on ("2.0", "inf", "0.0"; "" for an ORM).
    plus_token, minus_token: the two tokens whose logits are read.
    min_step_chars, delimiter: how solutions were split into steps (`split_steps`).
    step_tag: "" (read at each step's last token) or the text inserted after every step and
      read at its last token (algo.erprm.step_tag, e.g. " ки").
  """

  name: str
  kind: str
  label: str
  plus_token: str = "+"
  minus_token: str = "-"
  min_step_chars: int = 0
  delimiter: str = "\n"
  step_tag: str = ""

  def __post_init__(self):
    if self.kind not in PRM_KINDS:
      raise ValueError(f"PrmSpec.kind={self.kind!r}; choose one of {PRM_KINDS}")

  def save(self, directory: str) -> str:
    path = os.path.join(directory, SPEC_FILE)
    with open(path, "w") as fh:
      json.dump(dataclasses.asdict(self), fh, indent=2, sort_keys=True)
    return path

  @classmethod
  def load(cls, directory: str) -> "PrmSpec":
    path = os.path.join(directory, SPEC_FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{directory!r} has no {SPEC_FILE}; pass a directory written by "
                              "`prl-jax erprm` (a PRM in HF layout with its prm.json).")
    with open(path) as fh:
      return cls(**json.load(fh))


def token_id(tokenizer: Any, token: str, key: str = "algo.erprm.plus_token") -> int:
  """The id of a single-token string; anything that is not exactly one token is an error."""
  ids = tokenizer.encode(token)
  if len(ids) != 1:
    raise ValueError(f"{key}={token!r} encodes to {len(ids)} tokens {ids}; the PRM reads the "
                     "logit of one token, so choose a string that is a single token.")
  return int(ids[0])


# ------------------------------------------------------------------------------------------------
# The read-out: pure, jit-able.


def _output_columns(model_cfg: ModelConfig, params: Any, ids: jax.Array) -> jax.Array:
  """[d, len(ids)]: the columns of the output projection for `ids` (no [.., V] logits built)."""
  p = params["params"]
  if model_cfg.tie_embeddings:
    return p["embed"]["embedding"][ids].T
  return p["lm_head"]["kernel"][:, ids]


def step_end_logits(model_cfg: ModelConfig, params: Any, seq: SequenceBatch, plus_id,
                    minus_id) -> tuple[jax.Array, jax.Array]:
  """(z+, z-), each [B, N] float32: the logits of the two tokens after reading response token t.

      z_t = W_out[:, id]^T h_{P + t},   h = the final normed hidden states

  the same numbers as the full logits at sequence position P + t, without the [B, N, V] block.
  """
  hidden, _ = Transformer(model_cfg).apply(params, seq.tokens, token_mask=seq.token_mask,
                                           return_hidden=True)
  hidden = hidden[:, seq.prompt_len:]
  columns = _output_columns(model_cfg, params, jnp.stack([jnp.asarray(plus_id),
                                                          jnp.asarray(minus_id)]))
  z = jnp.einsum("btd,dk->btk", hidden, columns.astype(hidden.dtype),
                 preferred_element_type=jnp.float32)
  return z[..., 0], z[..., 1]


def prm_step_scores(model_cfg: ModelConfig, params: Any, seq: SequenceBatch, step_end: jax.Array,
                    plus_id, minus_id) -> jax.Array:
  """Step scores softmax([z+, z-])[0] at step ends, 0 elsewhere (ER-PRM section 5, inference).

  Args:
    model_cfg: the PRM's config (static under jit).
    params: the PRM's parameters.
    seq: prompt + response sequences; `seq.prompt_len` is P.
    step_end: [B, N] step-end mask over the response (e.g. `prl_jax.ops.steps.step_end_mask`).
    plus_id, minus_id: ids of the two tokens (ints or int32 scalars).

  Returns:
    [B, N] float32 in (0, 1) at valid step ends, 0 elsewhere.
  """
  with shape_errors("prm_step_scores"):
    chex.assert_rank([seq.tokens, step_end], 2)
    chex.assert_equal_shape([step_end, seq.response_mask])
  zp, zm = step_end_logits(model_cfg, params, seq, plus_id, minus_id)
  at = jnp.asarray(step_end).astype(bool) & (jnp.asarray(seq.response_mask) != 0)
  return jnp.where(at, step_scores(zp, zm), 0.0)


def prm_loss_fn(model_cfg: ModelConfig, plus_id: int, minus_id: int) -> updates.LossFn:
  """ER-PRM soft cross-entropy at step ends, as (sum, (count, metric sums))."""

  def loss(params, batch: PrmBatch):
    zp, zm = step_end_logits(model_cfg, params, batch.seq, plus_id, minus_id)
    ends = batch.step_end & (batch.seq.response_mask != 0)
    num, den = er_prm_loss(zp, zm, batch.target, ends)
    # Agreement of the score with the rounded label, summed (divided by the count later).
    agree = ((zp > zm) == (batch.target > 0.5)) & ends
    return num, (den, {"step_acc": jnp.sum(agree.astype(jnp.float32))})

  return loss


def make_prm_update(model_cfg: ModelConfig, tx: optax.GradientTransformation, plus_id: int,
                    minus_id: int) -> Callable[[ModelState, PrmBatch], tuple[ModelState, dict]]:
  """One optimizer step on a PrmBatch: jitted, the state donated."""
  loss_fn = prm_loss_fn(model_cfg, plus_id, minus_id)
  def update(state, batch):
    return updates.minibatch_updates(state, tx, loss_fn, batch, 1, 1)

  return jax.jit(update, donate_argnums=0)


# ------------------------------------------------------------------------------------------------
# Records -> batches.


def pack_solution(encode: Callable[[str], list[int]], eos_id: int, steps: Sequence[str],
                  finished: bool, tag: str = "", delimiter: str = "\n"
                  ) -> tuple[list[int], list[int]]:
  """Response ids of a solution (+ EOS when it finished) and the response index of each step end.

  The final step ends at the last token: the EOS when there is one, so the last score is read
  after the model has seen the whole response (as `step_end_mask` marks the last valid token).
  With a `tag`, every step is encoded as body + tag + its closing `delimiter` and ends at the
  tag's last token (`tagged_solution`).
  """
  if tag:
    return tagged_solution(encode, steps, tag, delimiter)
  steps = list(steps) or [""]
  ids, ends = encode_steps(encode, steps)
  if finished:
    ids = ids + [int(eos_id)]
    ends[-1] = len(ids) - 1
  if not ids:
    raise ValueError("pack_solution: an unfinished solution without tokens has no step to score")
  return ids, ends


def tagged_solution(encode: Callable[[str], list[int]], steps: Sequence[str], tag: str,
                    delimiter: str = "\n") -> tuple[list[int], list[int]]:
  """Ids of the steps with `tag` after each (before its closing `delimiter`), and the index of
  each tag's last token: where a Math-Shepherd-style PRM is read.

      ids = enc(body_1) enc(tag) enc(delim) ... enc(body_K) enc(tag) [enc(delim)]

  Encoded piece by piece, so the tag is its own token(s) whatever the text around it.
  """
  ids, ends = [], []
  for step in list(steps) or [""]:
    closed = bool(delimiter) and step.endswith(delimiter)
    ids.extend(encode(step[:-len(delimiter)] if closed else step))
    ids.extend(encode(tag))
    ends.append(len(ids) - 1)
    if closed:
      ids.extend(encode(delimiter))
  return ids, ends


def record_targets(record: dict, kind: str, label: str) -> tuple[list[int], list[float]]:
  """(labelled step indices, targets): every step's label (PRM) or the outcome at the last (ORM)."""
  k = len(record["steps"])
  if kind == "orm":
    return [k - 1], [float(record["outcome"] > 0.5)]
  if label not in record["labels"]:
    raise ValueError(f"record {record.get('id')!r} has no labels at eta {label!r} (it has "
                     f"{sorted(record['labels'])}); relabel with that eta")
  return list(range(k)), [float(v) for v in record["labels"][label]]


def prm_batch(tokenizer: Any, records: Sequence[dict], kind: str, label: str, prompt_len: int,
              response_len: int, tag: str = "", delimiter: str = "\n") -> PrmBatch:
  """Host-side PrmBatch (NumPy) of labelled records; place it on devices afterwards."""
  encode = lambda text: tokenizer.encode(text)
  prompts, responses, ends_list, targets_list = [], [], [], []
  for rec in records:
    ids, ends = pack_solution(encode, tokenizer.eos_id, rec["steps"], rec["finished"], tag,
                              delimiter)
    which, targets = record_targets(rec, kind, label)
    prompts.append(encode(rec["prompt"]))
    responses.append(ids)
    ends_list.append([ends[k] for k in which])
    targets_list.append(targets)
  seq = make_sequences(prompts, responses, prompt_len, response_len, tokenizer.pad_id)
  step_end = np.zeros((len(records), response_len), bool)
  target = np.zeros((len(records), response_len), np.float32)
  for i, (ends, targets) in enumerate(zip(ends_list, targets_list)):
    step_end[i, ends] = True
    target[i, ends] = targets
  return PrmBatch(seq=seq, step_end=step_end, target=target)


# ------------------------------------------------------------------------------------------------
# Training.

# ModelConfig fields that say how a model runs, not what it computes: a PRM from a checkpoint
# runs with the run's values of these, whatever it was trained with.
RUNTIME_FIELDS = ("dtype", "remat", "attention_chunk", "attention_impl", "scan_unroll",
                  "max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class PrmStart:
  """What every PRM of a run starts from (algo.erprm.prm_init).

  Attributes:
    model_cfg: the architecture the PRMs are trained, exported and scored under.
    params: the starting parameters, placed on the run's mesh.
    like: the HF checkpoint whose stored dtype and layout the exports copy (None: the policy's).
  """

  model_cfg: ModelConfig
  params: Any
  like: str | None = None


def prm_start(ctx: Any, policy_params: Any) -> PrmStart:
  """Where the PRMs of a run start (algo.erprm.prm_init).

  "" (default): the policy, ER-PRM's recipe (the PRM is a copy of the SFT policy). Otherwise the
  HF checkpoint at prm_init, of any architecture that reads the policy's tokens (the same
  vocabulary: a larger PRM for a small policy, as best-of-N verifiers usually are, or a
  checkpoint that knows the task where the policy has learned wrong habits). The PRMs are then
  trained, exported and scored under that checkpoint's own model config.
  """
  path = ctx.config.algo.erprm.prm_init
  if not path:
    return PrmStart(ctx.model_cfg, policy_params)
  if not os.path.exists(os.path.join(path, hf.CONFIG_FILE)):
    raise ConfigError(f"algo.erprm.prm_init={path!r} has no {hf.CONFIG_FILE}; pass a directory "
                      "in HF layout (e.g. a `prl-jax sft` export, runs/sft/final_hf), or '' to "
                      "start each PRM from the policy.")
  theirs, params = hf.load_hf(path)
  ours = ctx.model_cfg
  if theirs.vocab_size != ours.vocab_size:
    raise ConfigError(f"algo.erprm.prm_init={path!r} has a vocabulary of {theirs.vocab_size} "
                      f"tokens but the policy {ours.vocab_size}: a PRM reads the policy's tokens, "
                      "so start it from a checkpoint with the policy's tokenizer.")
  theirs = dataclasses.replace(theirs, **{k: getattr(ours, k) for k in RUNTIME_FIELDS})
  return PrmStart(theirs, ctx.place_state(params, theirs), path)


def train_prm(ctx: Any, start: PrmStart, records: Sequence[dict], spec: PrmSpec, out_dir: str, *,
              steps: int, batch_size: int, lr: float, grad_clip: float, seed: int,
              log_every: int = 10, probe: Callable[[Any], dict] | None = None,
              probe_every: int = 0) -> dict:
  """Trains one PRM from `start` (`prm_start`) and exports it to `out_dir` in HF layout.

  Batches of `batch_size` records are drawn without replacement within a batch from a NumPy
  generator seeded with `seed`; AdamW with a cosine decay after a 5% warm-up. Metrics go to
  `out_dir/prm_metrics.jsonl`.

  Args:
    ctx: the run context (`prl_jax.run.context.RunContext`): model config, tokenizer, mesh,
      prompt length and response length (`config.rollout.max_new_tokens`).
    start: the starting architecture and parameters (not modified: the update donates a copy).
    records: labelled records (`prl_jax.prm.labels`).
    spec: what to train (kind, labels) and how to read it (tokens, step splitting).
    out_dir: the export directory.
    probe: optional params -> {name: float}, measured every `probe_every` steps and after the
      last one and logged as prm/<name> (e.g. a held-out AUROC, to see when a PRM starts to
      check rather than only where it ends).

  Returns:
    {"first_loss": the first batch's loss, "final_loss" and "final_step_acc": means over the
    last tenth of the steps} (step_acc: agreement of score > 1/2 with label > 1/2), and
    "probe": the probe's last measurement when there is a probe.
  """
  if not records:
    raise ValueError("train_prm: no labelled records")
  if steps < 1 or batch_size < 1:
    raise ValueError(f"train_prm: steps and batch_size must be >= 1, got {steps}, {batch_size}")
  tok = ctx.tokenizer
  plus_id = token_id(tok, spec.plus_token, "algo.erprm.plus_token")
  minus_id = token_id(tok, spec.minus_token, "algo.erprm.minus_token")
  response_len = ctx.config.rollout.max_new_tokens
  tx = adamw(lr, grad_clip=grad_clip, schedule="cosine", warmup_steps=max(steps // 20, 0),
             total_steps=steps)
  params = jax.tree_util.tree_map(jnp.array, start.params)  # a copy: the update donates it
  state = ctx.place_state(ModelState(params, tx.init(params)), start.model_cfg)
  update = make_prm_update(start.model_cfg, tx, plus_id, minus_id)
  rng = np.random.default_rng(seed)
  writer = MetricsWriter(out_dir, tensorboard=False, progress=ctx.config.log.progress, total=steps,
                         filename="prm_metrics.jsonl", desc=f"prm: {spec.name}")
  size = min(batch_size, len(records))
  history = []
  for step in range(1, steps + 1):
    rows = rng.choice(len(records), size=size, replace=False)
    batch = prm_batch(tok, [records[i] for i in rows], spec.kind, spec.label, ctx.prompt_len,
                      response_len, spec.step_tag, spec.delimiter)
    state, metrics = update(state, ctx.place_batch(batch))
    metrics = {f"prm/{k}": float(v) for k, v in jax.device_get(metrics).items()}
    history.append(metrics)
    probed = probe is not None and (step == steps or (probe_every and step % probe_every == 0))
    if probed:
      last_probe = {k: float(v) for k, v in probe(state.params).items()}
      metrics = {**metrics, **{f"prm/{k}": v for k, v in last_probe.items()}}
    if probed or step == 1 or step % log_every == 0 or step == steps:
      writer.write(step, metrics)
  writer.close()
  ctx.export_policy(state.params, out_dir, start.model_cfg, like=start.like)
  spec.save(out_dir)
  # One batch is noisy: the summary averages the last tenth of the steps.
  tail = history[-max(1, steps // 10):]
  summary = {"first_loss": history[0]["prm/loss"],
             "final_loss": float(np.mean([m["prm/loss"] for m in tail])),
             "final_step_acc": float(np.mean([m["prm/step_acc"] for m in tail]))}
  return summary if probe is None else {**summary, "probe": last_probe}


def load_prm(directory: str, dtype: str = "float32") -> tuple[PrmSpec, ModelConfig, Any]:
  """(spec, model config, params) of a PRM exported by `train_prm`."""
  spec = PrmSpec.load(directory)
  with open(os.path.join(directory, "config.json")) as fh:
    model_cfg = hf.config_from_hf(json.load(fh), dtype=dtype)
  _, params = hf.load_hf(directory, config=model_cfg)
  return spec, model_cfg, params

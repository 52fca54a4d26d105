"""Reward-model training for every kind: bt, scaled_bt, regression, prm, genarm.

A kind is an `Objective` registered by name in `OBJECTIVES`: the head it trains, the
record formats it reads, the synthetic format it builds, its loss and its held-out
evaluation. `run(cfg, workdir)` reads or builds the data (jsonl/parquet in the public
formats, encoded by `rewardlab.data.encode`), trains with AdamW (warmup + cosine)
through the shared resumable loop (`train.loop.fit`: checkpoints hold params, optimizer
and data-iterator state), optionally with LoRA adapters on a frozen backbone
(`cfg.lora.rank > 0`, `rewardlab.models.lora`; the saved model is merged), evaluates
on held-out data (`rewardlab.eval.reward_model`) and saves the model (`workdir/reward_model`), the report (`workdir/rm_results.json`)
and the reliability diagram (`workdir/rm_results_reliability.png`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rewardlab import losses, sharding
from rewardlab.data import buckets as buckets_lib
from rewardlab.data import encode as encode_lib
from rewardlab.data.formats import ReadStats, read_records
from rewardlab.data.tokenizers import CharTokenizer, load_tokenizer
from rewardlab.eval import reward_model as report_lib
from rewardlab.losses.registry import Registry
from rewardlab.models import lora
from rewardlab.models import reward as reward_lib
from rewardlab.models.hf import load_pretrained
from rewardlab.tasks import arithmetic, rm_data
from rewardlab.train import config_checks, loop, sft
from rewardlab.train import state as state_lib
from rewardlab.train import step as step_lib

log = logging.getLogger(__name__)
Config = ml_collections.ConfigDict
RMConfig = reward_lib.RewardModelConfig
LENGTH_KEYS = ("tokens", "mask", "chosen_tokens", "chosen_mask", "rejected_tokens",
               "rejected_mask")


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a reward-model kind trains and how.

  `loss(rm, cfg) -> loss_fn(params, batch) -> (loss, metrics)`;
  `evaluate(rm, params, examples, cfg) -> report` on stacked held-out examples;
  `sequences` is the number of sequences per example (2 for pairs), for tokens/s.
  """

  head: str
  formats: tuple[str, ...]
  synthetic: str
  loss: Callable[[RMConfig, Config], Callable]
  evaluate: Callable[[RMConfig, dict, dict, Config], dict]
  sequences: int = 1
  encode_options: Callable[[Config], dict] = lambda cfg: {}
  synthetic_options: Callable[[Config], dict] = (
      lambda cfg: {"correct_fraction": cfg.data.correct_fraction})


OBJECTIVES = Registry("reward-model kind")


# ----------------------------------------------------------------------------- losses


def _both_sides(batch: dict, name: str) -> jax.Array:
  """Chosen rows then rejected rows: `[B, ...]` twice -> `[2B, ...]`."""
  return jnp.concatenate([batch[f"chosen_{name}"], batch[f"rejected_{name}"]])


def pair_outcomes(rm: RMConfig, params, batch: dict, *, lm: bool = False):
  """Rewards `[B]` of the chosen and rejected sides, in one forward pass over `[2B, L]`.

  With `lm`, also the mean next-token NLL of the chosen responses (and their EOS) under
  the backbone's LM head, for the hidden-state regularizer (`lm_regularized`).
  """
  tokens, mask = _both_sides(batch, "tokens"), _both_sides(batch, "mask")
  index = _both_sides(batch, "score_index")
  if not lm:
    return (*jnp.split(reward_lib.outcome_scores(rm, params, tokens, mask, index), 2), None)
  scores, logps = reward_lib.outcome_scores_and_logprobs(rm, params, tokens, mask, index)
  size = batch["chosen_tokens"].shape[0]
  response = reward_lib.heads.response_mask(batch["chosen_mask"], batch["chosen_prompt_length"])
  return (*jnp.split(scores, 2), -losses.masked_mean(logps[:size], response))


def pair_genarm_logps(rm: RMConfig, params, batch: dict) -> tuple[jax.Array, jax.Array]:
  """`Σ_t log π_r(y_t | x, y_<t)` `[B]` over each side's response (and its EOS)."""
  tokens, mask = _both_sides(batch, "tokens"), _both_sides(batch, "mask")
  logps = reward_lib.token_logprobs(rm, params, tokens, mask)
  response = reward_lib.heads.response_mask(mask, _both_sides(batch, "prompt_length"))
  return jnp.split(losses.masked_sum(logps, response, axis=-1), 2)


def lm_regularized(loss_and_metrics, nll, coef: float):
  """`L + α · NLL_LM` (Yang et al., 2024, "Regularizing hidden states enables learning
  generalizable reward model for LLMs": a language-modelling loss on the preferred text
  through the backbone's LM head keeps the shared hidden states informative). No-op
  when `nll` is None."""
  loss, metrics = loss_and_metrics
  if nll is None:
    return loss, metrics
  return loss + coef * nll, {**metrics, "lm_nll": nll}


def bt_loss(rm: RMConfig, cfg: Config):
  coef = cfg.loss.lm_coef
  def loss_fn(params, batch):
    r_c, r_r, nll = pair_outcomes(rm, params, batch, lm=bool(coef))
    margin = batch["margin"] if cfg.loss.use_margin else None
    return lm_regularized(losses.bradley_terry_loss(r_c, r_r, margin=margin,
                                                    center_coef=cfg.loss.center_coef), nll, coef)
  return loss_fn


def scaled_bt_loss(rm: RMConfig, cfg: Config):
  coef = cfg.loss.lm_coef
  def loss_fn(params, batch):
    r_c, r_r, nll = pair_outcomes(rm, params, batch, lm=bool(coef))
    return lm_regularized(losses.scaled_bt_loss(r_c, r_r, batch["strength"]), nll, coef)
  return loss_fn


def genarm_loss(rm: RMConfig, cfg: Config):
  def loss_fn(params, batch):
    lp_c, lp_r = pair_genarm_logps(rm, params, batch)
    return losses.genarm_loss(lp_c, lp_r, beta=rm.beta, gamma=cfg.loss.gamma)
  return loss_fn


def regression_loss(rm: RMConfig, cfg: Config):
  del cfg
  def loss_fn(params, batch):
    pred = reward_lib.attribute_scores(rm, params, batch["tokens"], batch["mask"],
                                       batch["score_index"])
    return losses.regression_loss(pred, batch["targets"], names=rm.attributes)
  return loss_fn


def good_prefix_mask(batch: dict) -> jax.Array:
  """`[B, T]` 1 on tokens 1.. up to the end of the last step of the all-good step prefix
  (steps before the first one labelled wrong), 0 elsewhere."""
  good = (batch["step_labels"] > 0.5) & batch["step_mask"].astype(bool)  # [B, S]
  count = jnp.cumprod(good.astype(jnp.int32), axis=1).sum(axis=1)  # [B]
  last = jnp.take_along_axis(batch["step_positions"], jnp.maximum(count - 1, 0)[:, None], 1)[:, 0]
  end = jnp.where(count > 0, last, 0)
  t = jnp.arange(batch["tokens"].shape[1])[None]
  return batch["mask"].astype(bool) & (t >= 1) & (t <= end[:, None])


def prm_loss(rm: RMConfig, cfg: Config):
  coef = cfg.loss.lm_coef
  def loss_fn(params, batch):
    args = (rm, params, batch["tokens"], batch["mask"], batch["step_positions"],
            batch.get("prompt_length"))
    nll = None
    if coef:
      logits, logps = reward_lib.step_logits_and_logprobs(*args)
      nll = -losses.masked_mean(logps, good_prefix_mask(batch))
    else:
      logits = reward_lib.step_logits(*args)
    return lm_regularized(losses.prm_loss(logits, batch["step_labels"], batch["step_mask"],
                                          last_step_only=cfg.loss.last_step_only), nll, coef)
  return loss_fn


# ----------------------------------------------------------------------------- held-out evaluation


def _side_scores(fn, ex: dict, side: str, extra: str, batch_size: int) -> np.ndarray:
  arrays = {"tokens": ex[f"{side}_tokens"], "mask": ex[f"{side}_mask"],
            "extra": ex[f"{side}_{extra}"]}
  return reward_lib.apply_in_batches(fn, arrays, batch_size)


def _eval_pairs(jitted, extra: str):
  def evaluate(rm, params, ex, cfg):
    fn = lambda tokens, mask, extra: jitted(rm, params, tokens, mask, extra)
    chosen = _side_scores(fn, ex, "chosen", extra, cfg.eval.batch_size)
    rejected = _side_scores(fn, ex, "rejected", extra, cfg.eval.batch_size)
    return report_lib.pairwise_report(chosen, rejected, cfg.eval.n_bins)
  return evaluate


def eval_regression(rm, params, ex, cfg) -> dict:
  fn = lambda tokens, mask, index: reward_lib.jit_attribute_scores(rm, params, tokens, mask, index)
  pred = reward_lib.apply_in_batches(
      fn, {"tokens": ex["tokens"], "mask": ex["mask"], "index": ex["score_index"]},
      cfg.eval.batch_size)
  mse = np.mean((pred - ex["targets"]) ** 2, axis=0)
  return {"mse": float(mse.mean()), "num_examples": int(len(pred)),
          "mse_per_attribute": dict(zip(rm.attributes, map(float, mse))),
          "mean_abs_error": float(np.mean(np.abs(pred - ex["targets"])))}


def eval_prm(rm, params, ex, cfg) -> dict:
  fn = lambda tokens, mask, positions, prompt_length: jax.nn.sigmoid(
      reward_lib.jit_step_logits(rm, params, tokens, mask, positions, prompt_length))
  probs = reward_lib.apply_in_batches(
      fn, {"tokens": ex["tokens"], "mask": ex["mask"], "positions": ex["step_positions"],
           "prompt_length": ex["prompt_length"]}, cfg.eval.batch_size)
  counts = ex["step_mask"].sum(axis=1)
  rows = [p[:n] for p, n in zip(probs, counts)]
  first = [report_lib.first_error_label(y[:n]) for y, n in zip(ex["step_labels"], counts)]
  return report_lib.step_report(rows, first, threshold=cfg.eval.threshold, n_bins=cfg.eval.n_bins)


_step_options = lambda cfg: {"max_steps": cfg.data.max_steps, "separator": cfg.data.separator}
_pair_options = lambda cfg: {"pairs_per_problem": cfg.data.pairs_per_problem}
_PAIR_FORMATS = ("preference", "helpsteer2_preference")
OBJECTIVES.register("bt")(Objective(
    "outcome", _PAIR_FORMATS, "preference", bt_loss,
    _eval_pairs(reward_lib.jit_outcome_scores, "score_index"), sequences=2,
    synthetic_options=_pair_options))
OBJECTIVES.register("scaled_bt")(Objective(
    "outcome", _PAIR_FORMATS, "helpsteer2_preference", scaled_bt_loss,
    _eval_pairs(reward_lib.jit_outcome_scores, "score_index"), sequences=2,
    synthetic_options=_pair_options))
OBJECTIVES.register("genarm")(Objective(
    "genarm", _PAIR_FORMATS, "preference", genarm_loss,
    _eval_pairs(reward_lib.jit_genarm_scores, "prompt_length"), sequences=2,
    synthetic_options=_pair_options))
OBJECTIVES.register("regression")(Objective(
    "attributes", ("helpsteer2",), "helpsteer2", regression_loss, eval_regression))
OBJECTIVES.register("prm")(Objective(
    "process", ("stepwise", "math_shepherd"), "stepwise", prm_loss, eval_prm,
    encode_options=_step_options))


# ----------------------------------------------------------------------------- data


def _synthetic_files(cfg: Config, objective: Objective, workdir: str) -> dict:
  """Write train/eval jsonl of the objective's synthetic format (held-out problems by hash)."""
  d = cfg.data
  policy = sft.load_policy(d.policy_dir) if d.policy_dir and d.policy_samples else None
  paths = {}
  for split, num, seed in (("train", d.num_train_problems, cfg.seed),
                           ("eval", d.num_eval_problems, cfg.seed + 1)):
    problems = arithmetic.generate_problems(num, seed=seed, num_ops=tuple(d.num_ops),
                                            operand_max=d.operand_max,
                                            split="train" if split == "train" else "test")
    samples = None if policy is None else rm_data.sample_completions(
        *policy, problems, num_samples=d.policy_samples, seed=seed,
        max_new_tokens=d.policy_max_new_tokens)
    paths[split] = [rm_data.write_synthetic(
        os.path.join(workdir, "data", f"{split}.jsonl"), objective.synthetic, problems,
        seed=seed, samples=samples, **objective.synthetic_options(cfg))]
  return {"format": objective.synthetic, **paths}


def _user_files(cfg: Config, objective: Objective, workdir: str) -> dict:
  del workdir
  if cfg.data.format not in objective.formats:
    raise ValueError(f"data.format={cfg.data.format!r} cannot train kind {cfg.kind!r}; "
                     f"it reads {objective.formats}")
  split = lambda s: [p for p in s.split(",") if p]
  if not split(cfg.data.train_files) or not split(cfg.data.eval_files):
    raise ValueError("data.source='files' needs data.train_files and data.eval_files")
  return {"format": cfg.data.format, "train": split(cfg.data.train_files),
          "eval": split(cfg.data.eval_files)}


DATA_SOURCES = {"synthetic": _synthetic_files, "files": _user_files}


def trim_length(examples: list[dict]) -> list[dict]:
  """Cut the length axis to the longest real sequence, rounded up to a multiple of 8.

  Only padding is removed: every score index and step position stays in place.
  """
  longest = max(int(ex[k].sum()) for ex in examples for k in LENGTH_KEYS
                if k.endswith("mask") and k in ex)
  keep = -(-longest // 8) * 8
  return [{k: (v[:keep] if k in LENGTH_KEYS else v) for k, v in ex.items()} for ex in examples]


def mean_real_tokens(examples: list[dict]) -> float:
  """Real (unmasked) tokens per example over all its sequences: the logged tokens/s counts
  these, not padding."""
  masks = [k for k in examples[0] if k in LENGTH_KEYS and k.endswith("mask")]
  return float(np.mean([sum(int(ex[k].sum()) for k in masks) for ex in examples]))


def batch_padding(cfg: Config) -> str:
  """`cfg.data.batch_padding` resolved: "batch" (each batch to its own bucket) or "dataset"
  (every batch to the data set's longest). "auto" is "batch" in one process and "dataset"
  across several: the per-host batches of one global batch must share one shape."""
  mode = cfg.data.get("batch_padding", "dataset")
  if mode not in ("auto", "batch", "dataset"):
    raise ValueError(f"data.batch_padding={mode!r}; expected auto, batch or dataset")
  if mode == "auto":
    return "batch" if jax.process_count() == 1 else "dataset"
  if mode == "batch" and jax.process_count() > 1:
    raise ValueError("data.batch_padding='batch' needs one process (hosts would pad their "
                     "shares of a batch differently); use 'auto' or 'dataset'")
  return mode


def train_batches(train: list[dict], cfg: Config, *, shard_index: int | None = None,
                  shard_count: int | None = None):
  """The checkpointable training batch iterator and the padded lengths it may yield.

  Per-host batches of `train.batch_size / process_count` examples (`rewardlab.data.buckets`):
  padded per `data.batch_padding` to buckets from `data.length_buckets` (explicit) or
  `data.pad_to_multiple` / `data.max_length_buckets`, length-sorted in windows of
  `data.sort_window` batches when that is > 0. The order is a function of `seed` alone.
  """
  d = cfg.data
  longest = next(v.shape[0] for k, v in train[0].items() if k in LENGTH_KEYS)
  lengths = None
  if batch_padding(cfg) == "batch":
    lengths = buckets_lib.bucket_lengths(
        longest, multiple=d.get("pad_to_multiple", 8), max_buckets=d.get("max_length_buckets", 16),
        lengths=tuple(d.get("length_buckets", ())))
  data = buckets_lib.make_iterator(
      train, batch_size=cfg.train.batch_size // jax.process_count(), seed=cfg.seed,
      buckets=lengths, length_keys=LENGTH_KEYS, sort_window=d.get("sort_window", 0),
      shard_index=shard_index, shard_count=shard_count)
  return data, list(lengths or (longest,))


def load_split(paths, fmt: str, tokenizer, cfg: Config, objective: Objective):
  """Encoded examples of one split, and its read/encode stats (drops counted, reported)."""
  stats, examples = ReadStats(), []
  for path in paths:
    records, file_stats = read_records(path, fmt, strict=cfg.data.strict,
                                       check_text=getattr(tokenizer, "unencodable", None))
    stats.rows += file_stats.rows
    stats.kept += file_stats.kept
    stats.skipped.update(file_stats.skipped)
    examples += encode_lib.encode_records(tokenizer, records, cfg.model.max_length, stats=stats,
                                          **objective.encode_options(cfg))
  if not examples:
    raise ValueError(f"no usable examples in {list(paths)} ({stats.summary()})")
  return trim_length(examples), stats


# ----------------------------------------------------------------------------- model


def _tokenizer(cfg: Config):
  if cfg.data.source == "synthetic" and not cfg.data.tokenizer:
    return CharTokenizer.for_arithmetic()
  path = cfg.data.tokenizer or cfg.init_from
  if not path:
    raise ValueError("data.tokenizer (or init_from) must name a tokenizer directory")
  return load_tokenizer(path)


def outcome_head_from_attributes(head: dict, weights) -> dict:
  """An outcome head equal (up to a constant) to an attribute head's ranking reward:
  `kernel = W w` `[D, 1]` (the bias term `c · w` is a constant and is dropped)."""
  return {"kernel": head["kernel"] @ jnp.asarray(weights, head["kernel"].dtype)[:, None]}


def _scale_options(m, head: str, genarm_beta: float) -> dict:
  """`beta` (and `step_bias`) of the RM config: the process head's genarm form has its
  own scale and starting bias (`model.step_beta`, `model.step_bias`)."""
  if head == "process" and m.process_form == "genarm":
    return {"beta": m.step_beta, "step_bias": m.step_bias}
  return {"beta": genarm_beta}


def build_model(cfg: Config, objective: Objective, tokenizer, mesh=None):
  """`(rm_config, params)`: from `cfg.model` at random, or from `cfg.init_from` (a Hugging
  Face directory, or a saved reward model whose backbone, and head when compatible, is kept)."""
  source, backbone_params, head = None, None, None
  if not cfg.init_from:
    backbone = sft.model_config(cfg, tokenizer)
  elif os.path.exists(os.path.join(cfg.init_from, reward_lib.REWARD_CONFIG_FILE)):
    source, loaded, _ = reward_lib.load_reward_model(cfg.init_from, mesh=mesh)
    backbone, backbone_params, head = source.backbone, loaded["backbone"], loaded["head"]
  else:
    backbone, backbone_params = load_pretrained(cfg.init_from, mesh=mesh)
  m = cfg.model
  backbone = backbone.replace(remat=bool(m.remat), logprob_chunk=int(m.logprob_chunk))
  token_id = lambda t: tokenizer.token_to_id(t) if t else None
  rm = RMConfig(backbone=backbone, head=objective.head, process_form=m.process_form,
                plus_token_id=token_id(m.plus_token), minus_token_id=token_id(m.minus_token),
                attribute_weights=tuple(m.attribute_weights),
                **_scale_options(m, objective.head, cfg.loss.beta))
  params = reward_lib.init_reward_model(rm, jax.random.key(cfg.seed), mesh=mesh,
                                        backbone_params=backbone_params)
  if source is not None and source.head == "attributes" and rm.head == "outcome":
    params["head"] = outcome_head_from_attributes(head, source.attribute_weights)
  elif source is not None and source.head == rm.head and source.options() == rm.options():
    params["head"] = head
  return rm, params


# ----------------------------------------------------------------------------- run


def run(cfg: Config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Train (resuming from `workdir/checkpoints` if present), evaluate, save.

  `stop_after` ends this invocation after that many total steps (checkpointed), as an
  interruption would; running again resumes exactly.
  """
  config_checks.check_values(cfg)  # before anything is written
  objective = OBJECTIVES.get(cfg.kind)
  os.makedirs(workdir, exist_ok=True)
  if cfg.data.source not in DATA_SOURCES:
    raise ValueError(f"data.source={cfg.data.source!r}; expected one of {sorted(DATA_SOURCES)}")
  mesh = sharding.make_mesh(tuple(cfg.mesh_shape)) if cfg.get("mesh_shape") else None
  files = DATA_SOURCES[cfg.data.source](cfg, objective, workdir)
  tokenizer = _tokenizer(cfg)
  train, train_stats = load_split(files["train"], files["format"], tokenizer, cfg, objective)
  held_out, eval_stats = load_split(files["eval"], files["format"], tokenizer, cfg, objective)
  for name, stats in (("train", train_stats), ("eval", eval_stats)):
    log.info("%s data: %s", name, stats.summary())

  rm, params = build_model(cfg, objective, tokenizer, mesh)
  adapters = lora.from_config_dict(cfg.lora)
  params = lora.attach(adapters, params, jax.random.key(cfg.seed + 1), model_config=rm.backbone,
                       mesh=mesh)
  horizon = cfg.train.get("schedule_steps") or cfg.train.steps
  schedule = state_lib.warmup_cosine_schedule(cfg.train.learning_rate, horizon,
                                              cfg.train.warmup_steps)
  tx = state_lib.adamw(schedule, weight_decay=cfg.train.weight_decay,
                       clip_norm=cfg.train.clip_norm,
                       skip_nonfinite=cfg.train.get("max_bad_steps", 0))
  tx = state_lib.scale_subtree(tx, "head", cfg.train.head_lr_multiplier)
  loss_fn = objective.loss(rm, cfg)
  if adapters.enabled:
    tx, loss_fn = lora.freeze_base(tx), lora.loss_with_adapters(adapters, loss_fn)
  state = state_lib.TrainState.create(params, tx)
  data, length_buckets = train_batches(train, cfg)
  train_step = step_lib.make_train_step(  # one trace per length bucket, never more
      loss_fn, tx, mesh=mesh, max_traces=len(length_buckets),
      state_shardings=step_lib.state_shardings_of(state) if mesh is not None else None)
  length = next(v.shape[0] for k, v in train[0].items() if k in LENGTH_KEYS)
  result = loop.fit(state, train_step, data, workdir=workdir, total_steps=cfg.train.steps,
                    tokens_per_step=cfg.train.batch_size * mean_real_tokens(train),
                    log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every,
                    mesh=mesh, stop_after=stop_after, desc=f"rm-{cfg.kind}",
                    progress=cfg.progress, extra_metrics=lambda s, _: {"lr": float(schedule(s))},
                    config=config_checks.run_config(cfg, schedule_steps=horizon),
                    max_bad_steps=cfg.train.get("max_bad_steps", 0))
  if not result.finished:
    return {"stopped_at": int(result.state.step)}

  params = result.state.params
  trained = lora.tree_bytes({k: v for k, v in params.items()
                             if k != "backbone" or not adapters.enabled})
  if adapters.enabled:
    params = lora.merged_for_export(adapters, params, rm.backbone)
  report = objective.evaluate(rm, params, encode_lib.stack_examples(held_out), cfg)
  model_dir = os.path.join(workdir, "reward_model")
  reward_lib.save_reward_model(model_dir, rm, params, tokenizer)
  results = {"kind": cfg.kind, "steps": int(result.state.step),
             "train_seconds_this_run": result.seconds, "num_params": rm.backbone.num_params(),
             "train_examples": len(train), "eval_examples": len(held_out),
             "sequence_length": int(length), "length_buckets": length_buckets,
             "data_format": files["format"],
             "lora_rank": adapters.rank, "trained_param_bytes": trained,
             "optimizer_state_bytes": lora.tree_bytes(result.state.opt_state),
             "data": {"train": train_stats.summary(), "eval": eval_stats.summary()},
             "last_train_metrics": result.last_metrics, "reward_model_dir": model_dir,
             "eval": report}
  report_lib.write_report(workdir, results, name="rm_results", calibration=report.get("calibration"),
                          title=f"{cfg.kind} reward model, held-out")
  return results

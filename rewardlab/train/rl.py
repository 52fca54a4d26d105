"""RL fine-tuning of a policy on the synthetic task: GRPO family, PPO with a value head, TTRL.

One RL step:
  host    B prompts -> `generate` G completions each (temperature `algo.temperature`, stop at EOS)
          -> rewards by name (`rl_rewards`) -> a fixed-shape batch
  device  `update(state, batch) -> (state, metrics)`, one jit: log-probs of the sampled
          tokens under π_θ (these are π_old, or the sampler's are) and under the frozen
          reference (every k-th row when only logged), advantages
          (a registered group estimator, or GAE with the value head), then μ epochs × M
          minibatch AdamW steps in a `lax.scan`.

Old log-probs (`Algorithm.old_logprobs`): by default they are recomputed inside `update`
with the parameters before the step, by the very forward pass the loss uses, so the
first ratio is exactly 1 and the clip fraction measures policy movement and not
KV-cache rounding; PPO needs that pass anyway for V_old. They agree with the sampler's
log-probs up to float rounding (tested to 1e-4; logged as `sampler_logprob_diff`), so
`old_logprobs="sampler"` takes the sampler's instead and saves one forward pass over
the batch (group estimators at τ = 1 only). The reference forward pass is needed in
full only when β ≠ 0; with β = 0 it serves the logged KL to π_ref, which
`kl_monitor_every = k` estimates on every k-th completion. With a rollout temperature
τ ≠ 1 (`Algorithm.temperature`) the policy is softmax(z / τ): ratios, KL and entropy
use those log-probs, and the check against the sampler (which reports softmax(z)
log-probs) undoes the τ first.

Sequences for the forward pass are `prompt ++ completion`, right padded to
`max_prompt_length + T`; the hidden state that predicts completion token t sits at
`len(prompt) - 1 + t` and also gives the value V_t of the state before token t.
The loop itself is `loop.fit` (progress bar, JSONL metrics, orbax checkpoints of the
state and of the prompt iterator); the state holds the step and the rng, so a resumed
run repeats the uninterrupted one exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rewardlab import models
from rewardlab.data import pipeline
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.losses import advantages as adv_lib
from rewardlab.losses import policy as policy_lib
from rewardlab.losses.registry import get_advantage_estimator, get_policy_loss
from rewardlab.models.config import TransformerConfig
from rewardlab.tasks import arithmetic
from rewardlab.train import checkpoint as checkpoint_lib
from rewardlab.train import config_checks, loop, rl_rewards, sft
from rewardlab.train import metrics as metrics_lib
from rewardlab.train import state as state_lib
from rewardlab.train.step import RetraceError


@flax.struct.dataclass
class RLState:
  """step; params {"policy": backbone, "value": head (PPO only)}; opt_state; rng uint32[2]."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, seed: int) -> "RLState":
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=jax.jit(tx.init)(params), rng=jax.random.PRNGKey(seed))


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """Static settings of `update` (hashable). `advantage` is a registered estimator
  (grpo, grpo_batch, dr_grpo, rloo) or `gae` (PPO: value head, loss `ppo`)."""

  advantage: str = "grpo"
  loss: str = "grpo"
  group_size: int = 8
  epsilon: float = 0.2
  epsilon_high: float = 0.0      # 0 keeps the loss's own default (ε; 0.28 for dapo)
  dual_clip: float = 0.0         # 0 = off
  kl_coef: float = 0.0           # β: in the loss (group) or in the token rewards (PPO)
  kl_estimator: str = "k3"
  entropy_coef: float = 0.0
  num_epochs: int = 1            # μ
  num_minibatches: int = 1
  gamma: float = 1.0
  lam: float = 0.95
  vf_coef: float = 0.1
  value_clip: float = 0.2
  whiten_advantages: bool = True
  missing_eos_penalty: float = 0.0
  temperature: float = 1.0       # rollout sampling temperature = the policy's softmax temperature
  old_logprobs: str = "recompute"  # π_old: "recompute" (a forward pass) or "sampler"'s
  kl_monitor_every: int = 1      # β = 0: the logged KL to π_ref on every k-th completion

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f"temperature must be positive, got {self.temperature}")
    if self.old_logprobs not in ("recompute", "sampler"):
      raise ValueError(f"old_logprobs must be 'recompute' or 'sampler', got "
                       f"{self.old_logprobs!r}")
    if self.old_logprobs == "sampler" and (self.temperature != 1.0 or self.uses_values):
      raise ValueError("old_logprobs='sampler' needs temperature 1 (the sampler reports "
                       "softmax(z) log-probs) and a group estimator (PPO needs V_old from "
                       f"a forward pass); got temperature={self.temperature}, "
                       f"advantage={self.advantage!r}")
    if self.kl_monitor_every < 1:
      raise ValueError(f"kl_monitor_every must be >= 1, got {self.kl_monitor_every}")
    if (self.advantage == "gae") != (self.loss == "ppo"):
      raise ValueError(f"advantage 'gae' goes with loss 'ppo' (value head), got "
                       f"advantage={self.advantage!r}, loss={self.loss!r}")
    get_policy_loss(self.loss)
    if self.advantage != "gae":
      get_advantage_estimator(self.advantage)
    if self.num_epochs < 1 or self.num_minibatches < 1:
      raise ValueError(f"num_epochs and num_minibatches must be >= 1, got "
                       f"{self.num_epochs}, {self.num_minibatches}")

  @property
  def uses_values(self) -> bool:
    return self.advantage == "gae"

  @property
  def reference_stride(self) -> int:
    """π_ref's log-probs are computed on every k-th completion: all of them when the
    loss or the token rewards use them (β ≠ 0), else `kl_monitor_every` (logging only)."""
    return 1 if self.kl_coef != 0.0 else self.kl_monitor_every

  @property
  def updates_per_step(self) -> int:
    """Optimizer steps per RL step: μ epochs × M minibatches."""
    return self.num_epochs * self.num_minibatches


# --------------------------------------------------------------------------- model pieces


def init_value_head(hidden_size: int) -> dict:
  """Per-token value head `V = h · w + b`, zero-initialized (V = 0 at the start)."""
  return {"kernel": jnp.zeros((hidden_size,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def value_head(head: dict, hidden: jax.Array) -> jax.Array:
  """[N, T, D] hidden states -> [N, T] values."""
  return hidden.astype(jnp.float32) @ head["kernel"] + head["bias"]


def policy_outputs(config: TransformerConfig, params: dict, batch: dict, *,
                   temperature: float = 1.0) -> dict:
  """Log-probs of the completion tokens, logits and (with a value head) values.

  batch: tokens, attention_mask [N, W]; completion_index, completion_tokens [N, T].
  temperature: the policy is softmax(logits / temperature), the distribution the
    rollouts were sampled from; ratios, KL and entropy all refer to it.
  Returns logp [N, T], logits [N, T, V] (divided by the temperature), values [N, T]
  (if params has "value").
  """
  hidden = models.hidden_states(config, params["policy"], batch["tokens"],
                                attention_mask=batch["attention_mask"])  # [N, W, D]
  h = jnp.take_along_axis(hidden, batch["completion_index"][..., None], axis=1)  # [N, T, D]
  logits = models.unembed(config, params["policy"], h).astype(jnp.float32)  # [N, T, V]
  if temperature != 1.0:
    logits = logits / temperature
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(logp_all, batch["completion_tokens"][..., None], axis=-1)[..., 0]
  out = {"logp": logp, "logits": logits}
  if "value" in params:
    out["values"] = value_head(params["value"], h)
  return out


# --------------------------------------------------------------------------- targets


def _group_targets(algo: Algorithm, batch: dict, old: dict, ref_logp) -> dict:
  """Sequence advantages [N] from returns `score + Σ_t token_rewards` by estimator."""
  del old, ref_logp
  mask = batch["completion_mask"]
  returns = batch["scores"] + adv_lib.masked_sum(batch["token_rewards"], mask, axis=-1)
  estimator = get_advantage_estimator(algo.advantage)
  return {"advantages": estimator(returns, algo.group_size)}


def _gae_targets(algo: Algorithm, batch: dict, old: dict, ref_logp) -> dict:
  """PPO: r_t = -β KL_t + dense rewards, score at the last token; GAE; whitening."""
  mask = batch["completion_mask"]
  kl = (jnp.zeros_like(old["logp"]) if ref_logp is None else  # β = 0: no KL reward
        policy_lib.kl_penalty(old["logp"], ref_logp, algo.kl_estimator))
  rewards = policy_lib.ppo_token_rewards(
      batch["scores"], kl, mask, kl_coef=algo.kl_coef, has_eos=batch["has_eos"],
      missing_eos_penalty=algo.missing_eos_penalty or None)
  rewards = rewards + jnp.where(mask.astype(bool), batch["token_rewards"], 0.0)
  advantages, returns = adv_lib.gae(rewards, old["values"], mask, gamma=algo.gamma, lam=algo.lam)
  if algo.whiten_advantages:
    advantages = adv_lib.whiten(advantages, mask)
  return {"advantages": advantages, "returns": returns, "old_values": old["values"]}


_TARGETS = {"group": _group_targets, "gae": _gae_targets}


def rl_loss(params, mb: dict, *, config: TransformerConfig, algo: Algorithm):
  """Loss of one minibatch: the registered policy loss (+ value loss for PPO) - c_H · H."""
  out = policy_outputs(config, params, mb, temperature=algo.temperature)
  mask = mb["completion_mask"]
  kwargs: dict = {"epsilon": algo.epsilon}
  if algo.epsilon_high:
    kwargs["epsilon_high"] = algo.epsilon_high
  if algo.dual_clip:
    kwargs["dual_clip"] = algo.dual_clip
  loss_fn = get_policy_loss(algo.loss)
  if algo.uses_values:
    loss, metrics = loss_fn(out["logp"], mb["old_logp"], mb["advantages"], mask,
                            values=out["values"], old_values=mb["old_values"],
                            returns=mb["returns"], vf_coef=algo.vf_coef,
                            value_clip=algo.value_clip or None, ref_logp=mb.get("ref_logp"),
                            kl_coef=0.0, kl_estimator=algo.kl_estimator, **kwargs)
  else:
    loss, metrics = loss_fn(out["logp"], mb["old_logp"], mb["advantages"], mask,
                            ref_logp=mb.get("ref_logp"), kl_coef=algo.kl_coef,
                            kl_estimator=algo.kl_estimator, **kwargs)
  entropy = policy_lib.entropy_from_logits(out["logits"], mask)
  return loss - algo.entropy_coef * entropy, {**metrics, "entropy": entropy}


@functools.partial(jax.jit, static_argnames=("config", "algo", "tx"), donate_argnums=0)
def update_step(state: RLState, batch: dict, ref_params, *, config: TransformerConfig,
                algo: Algorithm, tx: optax.GradientTransformation):
  """One RL update (see the module docstring): `(state, batch) -> (state, metrics)`.

  batch: the `rl_rewards.training_batch` fields plus `scores` [N], `token_rewards`
  [N, T], `has_eos` [N]. `ref_params` is the frozen reference backbone.
  """
  loss = functools.partial(rl_loss, config=config, algo=algo)
  mask = batch["completion_mask"]
  if algo.old_logprobs == "sampler":
    old = {"logp": batch["sampler_logprobs"]}
  else:
    old = jax.lax.stop_gradient(policy_outputs(config, state.params, batch,
                                               temperature=algo.temperature))
  monitor = slice(None, None, algo.reference_stride)
  monitor_ref_logp = policy_outputs(config, {"policy": ref_params},
                                    jax.tree.map(lambda x: x[monitor], batch),
                                    temperature=algo.temperature)["logp"]
  ref_logp = monitor_ref_logp if algo.reference_stride == 1 else None
  kind = "gae" if algo.uses_values else "group"
  data = {k: batch[k] for k in ("tokens", "attention_mask", "completion_index",
                                "completion_tokens", "completion_mask")}
  data.update(old_logp=old["logp"], **_TARGETS[kind](algo, batch, old, ref_logp))
  if ref_logp is not None:
    data["ref_logp"] = ref_logp

  n = mask.shape[0]
  if n % algo.num_minibatches:
    raise ValueError(f"num_minibatches={algo.num_minibatches} must divide {n} rows")
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)
  order = jax.vmap(lambda k: jax.random.permutation(k, n))(
      jax.random.split(key, algo.num_epochs))  # [E, N]
  order = order.reshape(algo.num_epochs * algo.num_minibatches, -1)  # [E·M, N/M]

  def minibatch_step(carry, idx):
    params, opt_state = carry
    mb = jax.tree.map(lambda x: x[idx], data)
    (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, mb)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), {**metrics, "loss": value, "grad_norm": optax.tree.norm(grads)}

  (params, opt_state), per_mb = jax.lax.scan(minibatch_step, (state.params, state.opt_state),
                                             order)
  metrics = jax.tree.map(jnp.mean, per_mb)
  adv = data["advantages"]
  adv_mask = mask if adv.ndim == 2 else jnp.ones_like(adv)
  metrics.update(
      advantage_mean=adv_lib.masked_mean(adv, adv_mask),
      advantage_abs=adv_lib.masked_mean(jnp.abs(adv), adv_mask),
      kl_ref_rollout=adv_lib.masked_mean(
          policy_lib.kl_penalty(old["logp"][monitor], monitor_ref_logp), mask[monitor]))
  if algo.old_logprobs == "recompute":  # how far the sampler's log-probs are from π_old's
    untempered_old_logp = old["logp"]
    if algo.temperature != 1.0:  # the sampler reports log-probs of softmax(z), untempered
      untempered_old_logp = jnp.take_along_axis(
          jax.nn.log_softmax(old["logits"] * algo.temperature),
          batch["completion_tokens"][..., None], axis=-1)[..., 0]
    metrics["sampler_logprob_diff"] = jnp.max(jnp.where(
        mask.astype(bool), jnp.abs(untempered_old_logp - batch["sampler_logprobs"]), 0.0))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def make_update(config: TransformerConfig, algo: Algorithm, tx: optax.GradientTransformation,
                ref_params):
  """`update(state, batch) -> (state, metrics)`: `update_step` with its static settings
  and reference bound. The state is donated. A batch whose shapes or dtypes differ from
  the first one's raises `RetraceError` (it would recompile the step)."""
  first: list = []

  def update(state: RLState, batch: dict):
    signature = tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))
    if first and signature != first[0]:
      raise RetraceError(f"RL update batch changed from {first[0]} to {signature}")
    first[:] = [signature]
    return update_step(state, batch, ref_params, config=config, algo=algo, tx=tx)

  return update


# --------------------------------------------------------------------------- host loop


# --------------------------------------------------------------------------- experiment


def algorithm_from_config(cfg) -> Algorithm:
  """`Algorithm` from the `algo` section of an RL config (group size from `rollout`)."""
  return Algorithm(group_size=cfg.rollout.group_size, **dict(cfg.algo))


def load_policy(cfg, tokenizer_max_slots: int):
  """`(config, params, tokenizer)`: the policy at `cfg.policy_dir`, or a random one
  (`cfg.model`, seed `cfg.seed`) when it is empty. `max_position_embeddings` is raised to
  `tokenizer_max_slots` if smaller: RoPE has no learned table, and the sampler pads
  prompts to a multiple of 16 slots, past the longest real position."""
  if cfg.policy_dir:
    config, params, tokenizer = sft.load_policy(cfg.policy_dir)
  else:
    tokenizer = CharTokenizer.for_arithmetic()
    config = sft.model_config(cfg, tokenizer)
    params = models.init_params(config, jax.random.key(cfg.seed))
  if config.max_position_embeddings < tokenizer_max_slots:
    config = dataclasses.replace(config, max_position_embeddings=tokenizer_max_slots)
  return config, params, tokenizer


@functools.lru_cache(maxsize=None)
def make_optimizer(learning_rate: float, warmup_steps: int, weight_decay: float,
                   clip_norm: float, b2: float = 0.999, decay_steps: int = 0,
                   final_lr_fraction: float = 1.0) -> optax.GradientTransformation:
  """AdamW (global-norm clipping) at `lr · min(1, (n + 1) / warmup_steps)` for optimizer
  step n (no step is wasted at rate 0). With `decay_steps` > 0 the rate then follows a
  cosine from `lr` at the end of warmup to `final_lr_fraction · lr` at step `decay_steps`
  (and stays there). Cached: equal settings give the same object, so the jitted
  `update_step` (static in `tx`) is reused across runs in one process."""
  if decay_steps < 0 or not 0.0 <= final_lr_fraction <= 1.0:
    raise ValueError(f"decay_steps must be >= 0 and final_lr_fraction in [0, 1], got "
                     f"{decay_steps}, {final_lr_fraction}")
  schedule = lr_schedule(learning_rate, warmup_steps, decay_steps, final_lr_fraction)
  return state_lib.adamw(schedule, weight_decay=weight_decay, clip_norm=clip_norm, b2=b2)


def lr_schedule(learning_rate: float, warmup_steps: int, decay_steps: int = 0,
                final_lr_fraction: float = 1.0):
  """The rate of optimizer step n (0-based) for `make_optimizer`."""
  warmup = float(max(warmup_steps, 1))

  def schedule(n):
    rate = learning_rate * jnp.minimum(1.0, (n + 1.0) / warmup)
    if decay_steps <= warmup_steps:
      return rate
    progress = jnp.clip((n + 1.0 - warmup) / (decay_steps - warmup), 0.0, 1.0)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(n + 1.0 < warmup, rate,
                     learning_rate * (final_lr_fraction + (1 - final_lr_fraction) * cosine))

  return schedule


def optimizer_decay(cfg, algo: Algorithm) -> tuple[int, float]:
  """`(decay_steps, final_lr_fraction)` of `make_optimizer` from `cfg.optim.decay`
  ("constant", or "cosine" over the run's `train.steps` RL steps)."""
  if cfg.optim.decay == "constant":
    return 0, 1.0
  if cfg.optim.decay == "cosine":
    return cfg.train.steps * algo.updates_per_step, float(cfg.optim.final_lr_fraction)
  raise ValueError(f"optim.decay={cfg.optim.decay!r}; expected 'constant' or 'cosine'")


def _reward_options(cfg, tokenizer, outcome_scorer, process_scorer) -> dict:
  """Keyword options of the configured reward. A scorer that is not given is loaded
  from `cfg.reward.model_dir` (`rewardlab.models.reward`: an outcome/attributes/GenARM
  head gives `score`, a process head `score_steps`)."""
  name = cfg.reward.name
  if name not in ("outcome_rm", "prm_dense"):
    return {}
  scorer = outcome_scorer if name == "outcome_rm" else process_scorer
  if scorer is None:
    if not cfg.reward.model_dir:
      raise ValueError(f"reward {name!r} needs a scorer or reward.model_dir")
    from rewardlab.models import reward as rm  # only these two rewards need it
    rm_config, rm_params, rm_tokenizer = rm.load_reward_model(cfg.reward.model_dir)
    make = rm.sequence_scorer if name == "outcome_rm" else rm.ProcessScorer
    scorer = make(rm_config, rm_params, rm_tokenizer or tokenizer)
  if name == "outcome_rm":
    return {"outcome_scorer": scorer}
  return {"process_scorer": scorer, "eta": cfg.reward.eta,
          "success_weight": cfg.reward.success_weight}


def _problems(cfg) -> tuple[list, list]:
  """(training prompts, held-out problems). The held-out set is the SFT evaluation set;
  `data.prompts = "eval"` trains on it without its labels (TTRL)."""
  if cfg.data.prompts not in ("train", "eval"):
    raise ValueError(f"data.prompts must be 'train' or 'eval', got {cfg.data.prompts!r}")
  test = sft.test_problems(cfg)
  if cfg.data.prompts == "eval":
    return test, test
  train = arithmetic.generate_problems(
      cfg.data.num_train, seed=cfg.seed + 1, num_ops=tuple(cfg.data.num_ops),
      operand_max=cfg.data.operand_max, split="train")
  return train, test


def _append_jsonl(path: str, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def run(cfg, workdir: str, *, stop_after: int | None = None, outcome_scorer=None,
        process_scorer=None) -> dict:
  """Train with RL (resuming from `workdir/checkpoints`), evaluate, plot. Returns results.

  Writes `train_metrics.jsonl` (every step), `eval_metrics.jsonl` (step 0, every
  `train.eval_every` steps, the end), `rl_curves.png`, `rl_results.json` and the final
  policy in `policy/` (the SFT policy's format).
  `stop_after` ends this invocation after that many total steps, as an interruption.
  """
  config_checks.check_values(cfg)
  os.makedirs(workdir, exist_ok=True)
  slots = -(-cfg.rollout.max_prompt_length // 16) * 16 + max(cfg.rollout.max_new_tokens,
                                                              cfg.eval.max_new_tokens)
  mconfig, policy_params, tokenizer = load_policy(cfg, slots)
  algo = algorithm_from_config(cfg)
  params = {"policy": policy_params}
  if algo.uses_values:
    params["value"] = init_value_head(mconfig.hidden_size)
  ref_params = jax.tree.map(jnp.copy, policy_params)  # the state is donated; keep a copy
  tx = make_optimizer(cfg.optim.learning_rate, cfg.optim.warmup_steps * algo.updates_per_step,
                      cfg.optim.weight_decay, cfg.optim.clip_norm, cfg.optim.b2,
                      *optimizer_decay(cfg, algo))
  state = RLState.create(params, tx, cfg.seed)
  reward_fn = rl_rewards.make_reward_fn(
      cfg.reward.name, **_reward_options(cfg, tokenizer, outcome_scorer, process_scorer))

  train, test = _problems(cfg)
  data = pipeline.make_iterator([{"index": np.int32(i)} for i in range(len(train))],
                                batch_size=cfg.rollout.batch_size, seed=cfg.seed)
  step_fn = rl_rewards.RLStep(
      mconfig, tokenizer, train, reward_fn, make_update(mconfig, algo, tx, ref_params),
      group_size=cfg.rollout.group_size, max_new_tokens=cfg.rollout.max_new_tokens,
      max_prompt_length=cfg.rollout.max_prompt_length, update_groups=cfg.rollout.update_groups,
      temperature=algo.temperature)
  eval_path = os.path.join(workdir, "eval_metrics.jsonl")
  t_start = time.perf_counter() - loop.elapsed_at_checkpoint(workdir)  # continues on resume

  def run_eval(step: int, params) -> dict:
    record = rl_rewards.evaluate(
        mconfig, params, tokenizer, test, max_new_tokens=cfg.eval.max_new_tokens,
        maj_k=cfg.eval.maj_k, maj_problems=cfg.eval.maj_problems,
        rng=jax.random.PRNGKey(cfg.seed + 7))
    record = {"step": step, "elapsed_s": time.perf_counter() - t_start, **record}
    _append_jsonl(eval_path, record)
    return record

  peek = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  fresh = peek.latest_step() is None
  peek.close()
  if fresh:
    run_eval(0, policy_params)

  def eval_hook(step: int) -> dict:
    if step % cfg.train.eval_every and step != cfg.train.steps:
      return {}
    record = run_eval(step, step_fn.latest.params["policy"])
    return {f"eval/{k}": v for k, v in record.items() if k != "step" and not isinstance(v, list)}

  result = loop.fit(state, step_fn, data, workdir=workdir, total_steps=cfg.train.steps,
                    log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every,
                    stop_after=stop_after, desc=f"rl-{cfg.reward.name}-{algo.loss}",
                    progress=cfg.progress, extra_metrics=eval_hook,
                    config=config_checks.run_config(cfg, decay=optimizer_decay(cfg, algo)))
  if not result.finished:
    return {"stopped_at": int(result.state.step)}
  evals = metrics_lib.read_jsonl(eval_path)
  policy_dir = os.path.join(workdir, "policy")
  sft.save_policy(policy_dir, mconfig, result.state.params["policy"], tokenizer)
  results = {"steps": int(result.state.step), "rl_seconds_this_run": result.seconds,
             "policy_dir": policy_dir,
             "load_average": os.getloadavg(), "start": evals[0], "final": evals[-1],
             "gain_pass1_greedy": evals[-1]["pass1_greedy"] - evals[0]["pass1_greedy"],
             "curves": plot_rl_curves(workdir, os.path.join(workdir, "rl_curves.png"))}
  metrics_lib.write_json(os.path.join(workdir, "rl_results.json"), results)
  return results


def plot_rl_curves(workdir: str, path: str) -> str:
  """PNG of rollout return and accuracy, held-out greedy pass@1 / sampled pass@1 / maj@k,
  KL, entropy and clip fraction, response length and gradient norm (value loss for
  PPO) against the RL step, from a run's JSONL files."""
  train = metrics_lib.read_jsonl(os.path.join(workdir, "train_metrics.jsonl"))
  evals = metrics_lib.read_jsonl(os.path.join(workdir, "eval_metrics.jsonl"))
  series = lambda rows, key: ([r["step"] for r in rows if key in r],
                              [r[key] for r in rows if key in r])
  panels = [("train", ["reward_mean", "accuracy", "prm_step_prob", "ttrl_label_accuracy"],
             "rollout return / accuracy"),
            ("eval", ["pass1_greedy", "pass1_sampled"] +
             [k for k in (evals[0] if evals else {}) if k.startswith("maj")], "held-out"),
            ("train", ["kl", "kl_ref_rollout", "approx_kl"], "KL to reference / to π_old"),
            ("train", ["entropy", "clip_fraction"], "entropy / clip fraction"),
            ("train", ["response_length"], "response length (tokens)"),
            ("train", ["grad_norm", "value_loss"], "gradient norm / value loss")]
  fig = Figure(figsize=(13, 7))
  for i, (source, keys, title) in enumerate(panels):
    ax = fig.add_subplot(2, 3, i + 1)
    for j, key in enumerate(keys):
      x, y = series(train if source == "train" else evals, key)
      if x and source == "eval":
        ax.plot(x, y, "o-", color=f"C{j}", label=key, markersize=3)
      elif x:  # noisy per-step values, faint, with a 10-step moving average
        ax.plot(x, y, "-", color=f"C{j}", alpha=0.3, linewidth=0.8)
        w = min(10, len(y))
        ax.plot(x[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid"), "-", color=f"C{j}",
                label=f"{key} (avg {w})")
    ax.set(title=title, xlabel="RL step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=110)
  return path

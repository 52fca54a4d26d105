"""The device side of an RL step: `update(state, batch) -> (state, metrics)` (SPECS §2).

One jit: log-probs of the sampled tokens under π_θ (these are π_old, or the sampler's
are) and under the frozen reference (every k-th row when only logged), advantages (a
registered group estimator, or GAE with the value head), then μ epochs × M minibatch
AdamW steps in a `lax.scan`.

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
Token log-probs and entropies come from `rewardlab.models.logprobs` in chunks over the
sequence (and the vocabulary if configured): the `[N, T, V]` logits are never formed at
once unless one chunk covers them (small vocabularies). The state is the training core's
`TrainState` (params `{"policy": backbone, "value": head}`, the value head for PPO only;
with LoRA also "lora" adapters, the policy being the base merged with them and π_ref the
base alone); the run's rng is an input of the update, and the
step's randomness is `fold_in(rng, state.step)`, so a resumed run repeats the
uninterrupted one exactly.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from rewardlab import sharding
from rewardlab.losses import advantages as adv_lib
from rewardlab.losses import policy as policy_lib
from rewardlab.losses.registry import get_advantage_estimator, get_policy_loss
from rewardlab.models import heads, lora
from rewardlab.models import logprobs as logprobs_lib
from rewardlab.models.config import TransformerConfig
from rewardlab.train import state as state_lib
from rewardlab.train.step import guard_retraces
from rewardlab.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """Static settings of `update` (hashable). `advantage` is a registered estimator
  (grpo, grpo_batch, dr_grpo, rloo) or `gae` (PPO: value head, loss `ppo`).

  `epsilon`, `epsilon_high` and `dual_clip` left at None take the chosen loss's own
  defaults (grpo: ε = ε_high = 0.2; dapo: ε_high = 0.28; gspo: ε = 3e-4, ε_high = 4e-4;
  no dual clip); a value overrides them for any loss.
  """

  advantage: str = "grpo"
  loss: str = "grpo"
  group_size: int = 8
  epsilon: float | None = None       # None: the loss's default
  epsilon_high: float | None = None  # None: the loss's default (ε for most, 0.28 for dapo)
  dual_clip: float | None = None     # None: the loss's default (off)
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

  def clip_options(self) -> dict:
    """The clip settings this algorithm sets; the loss's own defaults fill the rest."""
    options = {"epsilon": self.epsilon, "epsilon_high": self.epsilon_high,
               "dual_clip": self.dual_clip}
    return {k: v for k, v in options.items() if v is not None}


def algorithm_from_config(cfg) -> Algorithm:
  """`Algorithm` from the `algo` section of an RL config (group size from `rollout`)."""
  return Algorithm(group_size=cfg.rollout.group_size, **cfg.algo.to_dict())


# --------------------------------------------------------------------------- model pieces


def init_value_head(hidden_size: int) -> dict:
  """The PPO critic `heads.value_head`, zero-initialized (V = 0 at the start)."""
  return nn.meta.unbox(heads.init_linear_head(jax.random.key(0), hidden_size, 1, stddev=0.0))


def policy_outputs(config: TransformerConfig, params: dict, batch: dict, *,
                   temperature: float = 1.0, untempered: bool = False) -> dict:
  """Log-probs and entropies of the completion tokens and (with a value head) values,
  computed in chunks (`rewardlab.models.logprobs`: no `[N, T, V]` logits unless one
  chunk covers the whole batch, as at small vocabularies).

  batch: tokens, attention_mask [N, W]; completion_index, completion_tokens [N, T].
  temperature: the policy is softmax(logits / temperature), the distribution the
    rollouts were sampled from; ratios, KL and entropy all refer to it.
  untempered: also return "untempered_logp" [N, T], the log-probs under softmax(logits)
    (what the sampler reports), from the same hidden states (no second forward pass).
  Returns logp [N, T], entropy [N, T] (unmasked), values [N, T] (if params has "value").
  """
  stats = logprobs_lib.policy_token_stats(
      config, params["policy"], batch["tokens"], batch["attention_mask"],
      batch["completion_index"], batch["completion_tokens"], temperature=temperature)
  out = {"logp": stats["logp"], "entropy": stats["entropy"]}
  if "value" in params:
    out["values"] = heads.value_head(params["value"], stats["hidden"])
  if untempered:
    out["untempered_logp"] = stats["logp"] if temperature == 1.0 else (
        logprobs_lib.token_stats_from_hidden(config, params["policy"], stats["hidden"],
                                             batch["completion_tokens"]).logprobs)
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


def rl_loss(params, mb: dict, *, config: TransformerConfig, algo: Algorithm,
            adapters: lora.LoraConfig = lora.LoraConfig()):
  """Loss of one minibatch: the registered policy loss (+ value loss for PPO) - c_H · H.

  Only the clip settings the algorithm sets are passed (`Algorithm.clip_options`): the
  others keep the registered loss's defaults. With LoRA adapters in `params` ("lora"),
  the policy is the base merged with them (gradients reach only the adapters)."""
  params = lora.materialize(adapters, params, base_key="policy")
  out = policy_outputs(config, params, mb, temperature=algo.temperature)
  mask = mb["completion_mask"]
  loss_fn = get_policy_loss(algo.loss)
  kwargs = dict(algo.clip_options(), ref_logp=mb.get("ref_logp"),
                kl_estimator=algo.kl_estimator)
  if algo.uses_values:
    loss, metrics = loss_fn(out["logp"], mb["old_logp"], mb["advantages"], mask,
                            values=out["values"], old_values=mb["old_values"],
                            returns=mb["returns"], vf_coef=algo.vf_coef,
                            value_clip=algo.value_clip or None, kl_coef=0.0, **kwargs)
  else:
    loss, metrics = loss_fn(out["logp"], mb["old_logp"], mb["advantages"], mask,
                            kl_coef=algo.kl_coef, **kwargs)
  entropy = adv_lib.masked_mean(out["entropy"], mask)
  return loss - algo.entropy_coef * entropy, {**metrics, "entropy": entropy}


def update_step(state: TrainState, batch: dict, ref_params, rng, *, config: TransformerConfig,
                algo: Algorithm, tx: optax.GradientTransformation,
                adapters: lora.LoraConfig = lora.LoraConfig()):
  """One RL update (see the module docstring): `(state, batch) -> (state, metrics)`.

  batch: the `rollout.training_batch` fields plus `scores` [N], `token_rewards`
  [N, T], `has_eos` [N]. `ref_params` is the frozen reference backbone, `rng` the run's key.
  With LoRA (`state.params["lora"]`), `ref_params` is None: the reference is the base
  `state.params["policy"]` itself, without the adapters (no second copy of the weights).
  """
  loss = functools.partial(rl_loss, config=config, algo=algo, adapters=adapters)
  mask = batch["completion_mask"]
  if ref_params is None:
    if "lora" not in state.params:
      raise ValueError("update_step: ref_params is None but the state has no LoRA adapters")
    ref_params = jax.lax.stop_gradient(state.params["policy"])
  if algo.old_logprobs == "sampler":
    old = {"logp": batch["sampler_logprobs"]}
  else:
    current = lora.materialize(adapters, state.params, base_key="policy")
    old = jax.lax.stop_gradient(policy_outputs(config, current, batch,
                                               temperature=algo.temperature, untempered=True))
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
  key = jax.random.fold_in(jax.random.fold_in(rng, state.step), 1)
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
    # the sampler reports log-probs of softmax(z), untempered
    metrics["sampler_logprob_diff"] = jnp.max(jnp.where(
        mask.astype(bool), jnp.abs(old["untempered_logp"] - batch["sampler_logprobs"]), 0.0))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def make_update(config: TransformerConfig, algo: Algorithm, tx: optax.GradientTransformation,
                ref_params, rng, *, adapters: lora.LoraConfig = lora.LoraConfig(), mesh=None,
                state_shardings=None):
  """`update(state, batch) -> (state, metrics)`: `update_step` jitted with its static
  settings, the reference and the run's key bound. The state is donated. A batch whose
  shapes or dtypes differ from the first one's raises `RetraceError` (the training
  core's guard: it would recompile the step).

  With a mesh, the step is jitted with explicit shardings: the state's (a TrainState of
  NamedShardings, `step.state_shardings_of`), the reference's own placement, the batch
  over the data axes (`sharding.batch_sharding`), the key and the metrics replicated.
  `ref_params` is None with LoRA (the reference is the state's base)."""
  step = guard_retraces(
      functools.partial(update_step, config=config, algo=algo, tx=tx, adapters=adapters),
      name="RL update")
  if mesh is None:
    jitted = jax.jit(step, donate_argnums=0)
    return lambda state, batch: jitted(state, batch, ref_params, rng)
  replicated = NamedSharding(mesh, PartitionSpec())
  rng = jax.device_put(rng, replicated)
  ref_shardings = jax.tree.map(lambda x: x.sharding, ref_params)
  cache: dict = {}

  def sharded(state, batch):
    key = jax.tree.structure(batch)
    if key not in cache:
      batch_shardings = jax.tree.map(lambda x: sharding.batch_sharding(mesh, x.ndim), batch)
      cache[key] = jax.jit(step, in_shardings=(state_shardings, batch_shardings, ref_shardings,
                                               replicated),
                           out_shardings=(state_shardings, replicated), donate_argnums=0)
    with sharding.use_mesh(mesh):
      return cache[key](state, batch, ref_params, rng)

  return sharded


# --------------------------------------------------------------------------- optimizer


def lr_schedule(learning_rate: float, warmup_steps: int, decay_steps: int = 0,
                final_lr_fraction: float = 1.0) -> optax.Schedule:
  """The rate of optimizer step n (0-based): `lr · min(1, (n + 1) / warmup_steps)` (no
  step is wasted at rate 0); with `decay_steps` > warmup, then a cosine from `lr` at the
  end of warmup to `final_lr_fraction · lr` at step `decay_steps` (and there after).
  optax's warmup-cosine schedule, started one step into its warmup."""
  if decay_steps < 0 or not 0.0 <= final_lr_fraction <= 1.0:
    raise ValueError(f"decay_steps must be >= 0 and final_lr_fraction in [0, 1], got "
                     f"{decay_steps}, {final_lr_fraction}")
  warmup = max(warmup_steps, 1)
  if decay_steps <= warmup:
    final_lr_fraction, decay_steps = 1.0, warmup + 1  # constant after warmup
  return optax.warmup_cosine_decay_schedule(
      init_value=learning_rate / warmup, peak_value=learning_rate, warmup_steps=warmup - 1,
      decay_steps=decay_steps - 1, end_value=learning_rate * final_lr_fraction)


@functools.lru_cache(maxsize=None)
def make_optimizer(learning_rate: float, warmup_steps: int, weight_decay: float,
                   clip_norm: float, b2: float = 0.999, decay_steps: int = 0,
                   final_lr_fraction: float = 1.0) -> optax.GradientTransformation:
  """The training core's AdamW (global-norm clipping) at `lr_schedule`. Cached: equal
  settings give the same object."""
  schedule = lr_schedule(learning_rate, warmup_steps, decay_steps, final_lr_fraction)
  return state_lib.adamw(schedule, weight_decay=weight_decay, clip_norm=clip_norm, b2=b2)


def optimizer_decay(cfg, algo: Algorithm) -> tuple[int, float]:
  """`(decay_steps, final_lr_fraction)` of `make_optimizer` from `cfg.optim.decay`
  ("constant", or "cosine" over the run's `train.steps` RL steps)."""
  if cfg.optim.decay == "constant":
    return 0, 1.0
  if cfg.optim.decay == "cosine":
    return cfg.train.steps * algo.updates_per_step, float(cfg.optim.final_lr_fraction)
  raise ValueError(f"optim.decay={cfg.optim.decay!r}; expected 'constant' or 'cosine'")


def optimizer_from_config(cfg, algo: Algorithm) -> optax.GradientTransformation:
  """`make_optimizer` from the `optim` section; warmup is given in RL steps."""
  return make_optimizer(cfg.optim.learning_rate, cfg.optim.warmup_steps * algo.updates_per_step,
                        cfg.optim.weight_decay, cfg.optim.clip_norm, cfg.optim.b2,
                        *optimizer_decay(cfg, algo))

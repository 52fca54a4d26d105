"""Training generative step verifiers on the synthetic arithmetic task.

* `chain_example`: one (problem, solution lines, chain) as a causal-LM example: the judge
  prompt is context, the chain and EOS are targets, except a calculator's `=value` after
  `</calc>`, which the tool writes (an input, not a target).
* `sft`: supervised fine-tuning on such examples (resumable through `train.loop.fit`).
* `grpo`: GRPO of the judge (J1 / RM-R1): G sampled chains per labelled solution, reward 1
  when the chain's verdict (the first line it calls wrong, or none) matches the label, else
  0 (`chain_reward`; for pairwise judging `pairwise_reward` pays only position-consistent
  right verdicts); group advantages (`losses.advantages.group_advantages`) and the clipped surrogate
  (`losses.policy.clipped_surrogate_loss`), one update per batch (π_old = π).
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rewardlab.data import pipeline
from rewardlab.data.tokenizers import decode_sampled
from rewardlab.judges import arithmetic as judge_task
from rewardlab.judges import model as lm
from rewardlab.judges.model import JudgeModel
from rewardlab.judges.steps import revealed_chains, step_prompt_ids
from rewardlab.losses.advantages import group_advantages
from rewardlab.losses.policy import clipped_surrogate_loss
from rewardlab.sampling import score as score_lib
from rewardlab.train import loop
from rewardlab.train import state as state_lib
from rewardlab.train import step as step_lib
from rewardlab import models

log = logging.getLogger(__name__)

_TOOL_VALUE = re.escape(judge_task.CLOSE_TAG) + r"(=\d+)"
# A revealed line: after a `>` that ends no tag, up to the verdict (a tag's `>` is followed
# by an expression and `<`, or by the tool's `=value` and `>`, never directly by Y / N).
_REVEALED = r">([^<>\nYN]*)(?=[YN])"


def chain_pieces(chain: str, *, reveal: bool = False) -> list[tuple[str, bool]]:
  """(text, is_target) pieces of a chain: the tool's `=value` after each close tag is not
  a target, nor (`reveal`) the solution line the framework writes after each `>`."""
  pattern = re.compile(_TOOL_VALUE + (r"|" + _REVEALED if reveal else ""))
  pieces, last = [], 0
  for m in pattern.finditer(chain):
    group = 1 if m.group(1) is not None else 2
    pieces += [(chain[last:m.start(group)], True), (m.group(group), False)]
    last = m.end(group)
  return [p for p in pieces if p[0]] + [(chain[last:], True)]


def chain_example(judge: JudgeModel, prompt: str, steps: Sequence[str], chain: str,
                  max_length: int, *, template=judge_task.TEMPLATE,
                  verdict_weights: tuple[float, float] = (1.0, 1.0)) -> dict | None:
  """`tokens`, `loss_mask`, `attention_mask` `[max_length]`; None when it does not fit.
  `loss_mask` is `verdict_weights` (yes, no) at the verdict tokens (the first token of
  the template's first yes / no form), 1 at the other targets, 0 elsewhere."""
  tok = judge.tokenizer
  ids = step_prompt_ids(judge, template, prompt, steps)
  mask = [0.0] * len(ids)
  weight = {tok.encode(template.yes[0])[0]: float(verdict_weights[0]),
            tok.encode(template.no[0])[0]: float(verdict_weights[1])}
  for text, target in chain_pieces(chain, reveal=template.check_reveal is not None):
    piece = tok.encode(text)
    ids += piece
    mask += [weight.get(t, 1.0) * target for t in piece]
  ids.append(tok.eos_id)
  mask.append(1)
  if len(ids) > max_length:
    return None
  out = {"tokens": np.full(max_length, tok.pad_id, np.int32),
         "loss_mask": np.zeros(max_length, np.float32),
         "attention_mask": np.zeros(max_length, np.int32)}
  out["tokens"][:len(ids)], out["loss_mask"][:len(ids)] = ids, mask
  out["attention_mask"][:len(ids)] = 1
  return out


def sft(judge: JudgeModel, examples: Sequence[dict], *, workdir: str, steps: int,
        batch_size: int, learning_rate: float, warmup_steps: int, seed: int,
        progress: bool = False) -> JudgeModel:
  """Fine-tune the judge on chain examples; resumes from `workdir/checkpoints`."""
  if not examples:
    raise ValueError("sft: no training examples")
  config = judge.config
  data = pipeline.make_iterator(list(examples), batch_size=batch_size, seed=seed)
  schedule = state_lib.warmup_cosine_schedule(learning_rate, steps, warmup_steps)
  tx = state_lib.adamw(schedule, weight_decay=0.01, clip_norm=1.0)
  # The train step donates its state: start from a copy so the caller's params survive.
  state = state_lib.TrainState.create(jax.tree.map(jnp.copy, judge.params), tx)

  def loss_fn(params, batch):
    forward = lambda p, t, m: models.logits(config, p, t, attention_mask=m)
    return step_lib.causal_lm_loss(forward, params, batch)

  result = loop.fit(state, step_lib.make_train_step(loss_fn, tx), data, workdir=workdir,
                    total_steps=steps, log_every=max(1, steps // 5),
                    checkpoint_every=max(1, steps // 2), desc=os.path.basename(workdir),
                    progress=progress)
  return JudgeModel(config, result.state.params, judge.tokenizer)


def chain_reward(chain: str, num_steps: int, label: int) -> float:
  """1 when the chain's claimed first wrong line (-1: none) equals the label, else 0."""
  return float(judge_task.first_error_of_chain(chain, num_steps) == label)


def verdict_reward(chain: str, num_steps: int, label: int) -> float:
  """The share of the lines the label judges (up to its first wrong line, or all) whose
  verdict the chain got right (a line the chain did not judge counts as wrong): partial
  credit, from the same label as `chain_reward`, which it equals on 0 / 1 outcomes."""
  want = [True] * (num_steps if label < 0 else label) + ([] if label < 0 else [False])
  got = judge_task.chain_verdicts(chain)
  return float(sum(g == w for g, w in zip(got, want))) / max(1, len(want))


REWARDS = {"exact": chain_reward, "verdicts": verdict_reward}


def pairwise_reward(first_wins_ab: bool | None, first_wins_ba: bool | None,
                    a_is_better: bool) -> float:
  """J1's pairwise reward: 1 only when the verdicts in both orders name the better response
  (so a judge that always picks one position earns nothing), else 0; an unparsed verdict
  (None) earns 0."""
  if first_wins_ab is None or first_wins_ba is None:
    return 0.0
  return float(first_wins_ab == a_is_better and first_wins_ba == (not a_is_better))


def grpo(judge: JudgeModel, items: Sequence[tuple[str, list[str], int]], *, workdir: str,
         steps: int, batch_size: int, group_size: int, learning_rate: float,
         max_new_tokens: int, max_length: int, seed: int, temperature: float = 1.0,
         template=judge_task.TEMPLATE, reward: str = "exact"
         ) -> tuple[JudgeModel, list[dict]]:
  """GRPO of the judge on (prompt, lines, label) items; returns it and per-step metrics
  (mean reward, clip fraction). `reward`: `exact` (`chain_reward`) or `verdicts`
  (`verdict_reward`). With a revealing template the chains are sampled with the steps
  revealed (`steps.revealed_chains`) and only the judge's own tokens get the policy
  gradient. Writes `workdir/grpo_metrics.jsonl`."""
  if reward not in REWARDS:
    raise ValueError(f"unknown judge reward {reward!r}; known: {sorted(REWARDS)}")
  reward_fn = REWARDS[reward]
  config, tok = judge.config, judge.tokenizer
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
  params, opt_state = judge.params, None
  opt_state = tx.init(params)

  @jax.jit
  def update(params, opt_state, tokens, attention, completion, advantages):
    def loss_fn(p):
      logp = score_lib.token_logprobs(config, p, tokens, attention)
      return clipped_surrogate_loss(logp, jax.lax.stop_gradient(logp), advantages, completion)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, dict(metrics, loss=loss)

  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  history = []
  os.makedirs(workdir, exist_ok=True)
  for step in range(steps):
    pick = rng.choice(len(items), size=batch_size, replace=len(items) < batch_size)
    current = JudgeModel(config, params, tok)
    prompts = [step_prompt_ids(current, template, items[i][0], items[i][1]) for i in pick]
    key, sub = jax.random.split(key)
    if template.check_reveal is not None:
      chains, generated, _ = revealed_chains(current, template, prompts,
                                             [items[i][1] for i in pick], group_size,
                                             max_new_tokens=max_new_tokens,
                                             temperature=temperature, rng=sub)
    else:
      chains, _ = lm.sample(current, prompts, group_size, max_new_tokens=max_new_tokens,
                            temperature=temperature, rng=sub)
      generated = [[True] * len(c) for c in chains]
    rewards = np.array([reward_fn(decode_sampled(tok, c), len(items[i][1]), items[i][2])
                        for i, c in zip(np.repeat(pick, group_size), chains)], np.float32)
    adv = group_advantages(jnp.asarray(rewards), group_size)
    rows = [p for p in prompts for _ in range(group_size)]
    tokens, attention, completion = score_lib.pack(rows, chains, pad_id=tok.pad_id,
                                                   multiple=max_length)
    for r, (p, g) in enumerate(zip(rows, generated)):  # read tokens get no gradient
      completion[r, len(p):len(p) + len(g)] *= np.asarray(g, np.int32)
    params, opt_state, metrics = update(params, opt_state, tokens, attention, completion, adv)
    record = {"step": step + 1, "reward": float(rewards.mean()),
              **{k: float(v) for k, v in metrics.items()}}
    history.append(record)
    if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
      log.info("judge grpo step %d: reward %.3f", step + 1, record["reward"])
  with open(os.path.join(workdir, "grpo_metrics.jsonl"), "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in history))
  return JudgeModel(config, params, tok), history

"""Supervised fine-tuning of a causal LM on the synthetic arithmetic task.

`run(config, workdir)` trains from scratch (or resumes from `workdir/checkpoints`),
evaluates held-out greedy accuracy per number of operations, and exports the policy as
a Hugging Face directory (`workdir/policy`, with the character tokenizer beside it).
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import rewardlab
from rewardlab import models, sharding
from rewardlab.data import pipeline
from rewardlab.data.tokenizers import CharTokenizer, load_tokenizer
from rewardlab.models.config import TransformerConfig
from rewardlab.models.reward import save_tokenizer
from rewardlab.rl.evaluation import accuracy_by_num_ops, greedy_correct
from rewardlab.tasks import ArithmeticTask, arithmetic, problem_sets
from rewardlab.train import config_checks, loop
from rewardlab.train import metrics as metrics_lib
from rewardlab.train import state as state_lib
from rewardlab.train import step as step_lib

log = logging.getLogger(__name__)


def model_config(cfg: ml_collections.ConfigDict, tokenizer) -> TransformerConfig:
  m = cfg.model
  vocab = int(-(-tokenizer.vocab_size // 8) * 8)  # a multiple of 8 shards evenly
  return TransformerConfig(
      vocab_size=vocab, hidden_size=m.hidden_size, num_layers=m.num_layers,
      num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
      intermediate_size=m.intermediate_size, max_position_embeddings=m.max_length,
      rope_theta=m.rope_theta, dtype=m.dtype, param_dtype="float32", remat=m.remat,
      bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
      pad_token_id=tokenizer.pad_id)


def encode_example(tokenizer, problem: arithmetic.Problem, max_length: int) -> dict:
  """[BOS] prompt solution [EOS], right padded; the loss covers solution and EOS."""
  prompt = prompt_ids(tokenizer, problem)
  target = tokenizer.encode(problem.solution) + [tokenizer.eos_id]
  ids = prompt + target
  if len(ids) > max_length:
    raise ValueError(f"problem {problem.key!r}: {len(ids)} tokens > max_length {max_length}")
  tokens = np.full(max_length, tokenizer.pad_id, np.int32)
  tokens[:len(ids)] = ids
  loss_mask = np.zeros(max_length, np.int32)
  loss_mask[len(prompt):len(ids)] = 1
  attention_mask = (np.arange(max_length) < len(ids)).astype(np.int32)
  return {"tokens": tokens, "loss_mask": loss_mask, "attention_mask": attention_mask}


def prompt_ids(tokenizer, problem: arithmetic.Problem) -> list[int]:
  """``encode(prompt, add_bos=True)``: BOS first, once (the samplers encode prompts alike)."""
  return tokenizer.encode(problem.prompt, add_bos=True)


def greedy_accuracy(config: TransformerConfig, params, tokenizer,
                    problems: Sequence[arithmetic.Problem], *, batch_size: int = 100,
                    max_new_tokens: int = 64, mesh=None) -> dict:
  """Held-out greedy accuracy (`rl.evaluation.greedy_correct`), overall and per number
  of operations."""
  correct = greedy_correct(config, params, tokenizer, ArithmeticTask(), problems,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, mesh=mesh)
  return {"accuracy": float(correct.mean()), "num_problems": int(len(problems)),
          **accuracy_by_num_ops(correct, problems, "accuracy_")}


def test_problems(cfg: ml_collections.ConfigDict) -> list[arithmetic.Problem]:
  """`eval.num_per_k` held-out problems for each number of operations
  (`tasks.problem_sets.held_out`)."""
  source = problem_sets.arithmetic_source(cfg.data.num_ops, cfg.data.operand_max)
  return problem_sets.held_out(source, seed=cfg.seed, num_per_k=cfg.eval.num_per_k)


def save_policy(path: str, config: TransformerConfig, params, tokenizer) -> None:
  rewardlab.save_pretrained(path, config, params)
  save_tokenizer(tokenizer, path)  # char or Hugging Face


def load_policy(path: str, **kwargs):
  """`(config, params, tokenizer)` from a directory written by `save_policy`."""
  config, params = rewardlab.load_pretrained(path, **kwargs)
  return config, params, load_tokenizer(path)


def run(cfg: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None) -> dict:
  """Train (resuming if a checkpoint exists), evaluate, export. Returns the results dict.

  `stop_after` ends this invocation after that many total steps (saving a checkpoint),
  as an interruption would; running again resumes exactly.
  """
  config_checks.check_values(cfg)  # before anything is written
  os.makedirs(workdir, exist_ok=True)
  tokenizer = CharTokenizer.for_arithmetic()
  mconfig = model_config(cfg, tokenizer)
  mesh = sharding.make_mesh(tuple(cfg.mesh_shape)) if cfg.get("mesh_shape") else None

  train = arithmetic.generate_problems(cfg.data.num_train, seed=cfg.seed,
                                       num_ops=tuple(cfg.data.num_ops),
                                       operand_max=cfg.data.operand_max, split="train")
  examples = [encode_example(tokenizer, p, cfg.model.max_length) for p in train]
  data = pipeline.make_iterator(examples, batch_size=cfg.train.batch_size // jax.process_count(),
                                seed=cfg.seed)

  horizon = cfg.train.get("schedule_steps") or cfg.train.steps
  schedule = state_lib.warmup_cosine_schedule(cfg.train.learning_rate, horizon,
                                              cfg.train.warmup_steps)
  tx = state_lib.adamw(schedule, weight_decay=cfg.train.weight_decay,
                       clip_norm=cfg.train.clip_norm,
                       skip_nonfinite=cfg.train.get("max_bad_steps", 0))
  params = models.init_params(mconfig, jax.random.key(cfg.seed), mesh=mesh)
  state = state_lib.TrainState.create(params, tx)

  def loss_fn(params, batch):
    forward = lambda p, t, m: models.logits(mconfig, p, t, attention_mask=m)
    return step_lib.causal_lm_loss(forward, params, batch)

  train_step = step_lib.make_train_step(
      loss_fn, tx, mesh=mesh,
      state_shardings=step_lib.state_shardings_of(state) if mesh is not None else None)
  result = loop.fit(state, train_step, data, workdir=workdir, total_steps=cfg.train.steps,
                    tokens_per_step=cfg.train.batch_size * cfg.model.max_length,
                    log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every,
                    mesh=mesh, stop_after=stop_after, desc="sft", progress=cfg.progress,
                    extra_metrics=lambda step, _: {"lr": float(schedule(step))},
                    config=config_checks.run_config(cfg, schedule_steps=horizon),
                    max_bad_steps=cfg.train.get("max_bad_steps", 0))
  if not result.finished:
    return {"stopped_at": int(result.state.step)}
  state, train_seconds = result.state, result.seconds

  evaluation = greedy_accuracy(mconfig, state.params, tokenizer, test_problems(cfg),
                               max_new_tokens=cfg.eval.max_new_tokens)
  policy_dir = os.path.join(workdir, "policy")
  save_policy(policy_dir, mconfig, state.params, tokenizer)
  results = {"steps": int(state.step), "train_seconds_this_run": train_seconds,
             "num_params": mconfig.num_params(), "policy_dir": policy_dir, **evaluation}
  metrics_lib.write_json(os.path.join(workdir, "sft_results.json"), results)
  return results

"""An RL experiment from its config: policy, task, rewards, loop, evaluation, plots.

One RL step:
  host    B prompts -> `generate` G completions each (temperature `algo.temperature`, stop
          at EOS) -> rewards by name (`rewards`) -> a fixed-shape batch (`rollout`)
  device  `update(state, batch) -> (state, metrics)`, one jit (`update`)
The loop is the training core's `loop.fit` (progress bar, JSONL metrics, orbax
checkpoints of the state and of the prompt iterator); its hook receives `(step, state)`
and evaluates `state.params`. The problems and prompts come from the config's `task`
section (`rewardlab.tasks.source`): the synthetic arithmetic task by default, or GSM8K /
MATH / prompt-answer files with a Hugging Face policy and its own tokenizer.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jax.sharding import NamedSharding, PartitionSpec

from rewardlab import models, sharding
from rewardlab.data import pipeline
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.models import lora
from rewardlab.rl import evaluation, rewards, rollout
from rewardlab.rl import update as update_lib
from rewardlab.tasks import problem_sets
from rewardlab.tasks import source as source_lib
from rewardlab.train import checkpoint as checkpoint_lib
from rewardlab.train import config_checks, loop, sft
from rewardlab.train import step as step_lib
from rewardlab.train import metrics as metrics_lib
from rewardlab.train.state import TrainState


def load_policy(cfg, min_positions: int, mesh=None):
  """`(config, params, tokenizer)`: the policy at `cfg.policy_dir` (any supported local
  Hugging Face directory with its tokenizer, or an SFT policy), or a random one of shape
  `cfg.model` (seed `cfg.seed`, character tokenizer) when it is empty.
  `max_position_embeddings` is raised to `min_positions` if smaller: RoPE has no
  learned table, and the sampler pads prompts to a multiple of 16 slots, past the
  longest real position. With a mesh the parameters are placed by the logical rules."""
  if cfg.policy_dir:
    config, params, tokenizer = sft.load_policy(cfg.policy_dir, mesh=mesh)
  else:
    tokenizer = CharTokenizer.for_arithmetic()
    config = sft.model_config(cfg, tokenizer)
    params = models.init_params(config, jax.random.key(cfg.seed), mesh=mesh)
  if config.max_position_embeddings < min_positions:
    config = dataclasses.replace(config, max_position_embeddings=min_positions)
  return config, params, tokenizer


def check_mesh_rows(cfg, mesh) -> None:
  """ValueError when the update's rows (groups x group size) do not split evenly over
  the mesh's data axes (data x fsdp)."""
  if mesh is None:
    return
  groups = min(cfg.rollout.update_groups or cfg.rollout.batch_size, cfg.rollout.batch_size)
  rows, shards = groups * cfg.rollout.group_size, mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % shards:
    raise ValueError(f"mesh_shape={tuple(cfg.mesh_shape)}: the update's {rows} rows "
                     f"(update groups x group size) do not split over "
                     f"{shards} data shards (data x fsdp)")


def problems(cfg, source) -> tuple[list, list]:
  """(training problems, held-out problems) of `tasks.problem_sets`. `data.prompts =
  "eval"` trains on the held-out problems without their labels (TTRL)."""
  if cfg.data.prompts not in ("train", "eval"):
    raise ValueError(f"data.prompts must be 'train' or 'eval', got {cfg.data.prompts!r}")
  test = problem_sets.held_out(source, seed=cfg.seed, num_per_k=cfg.eval.num_per_k,
                               num=cfg.eval.num_problems)
  if cfg.data.prompts == "eval":
    return test, test
  return problem_sets.rl_train(source, seed=cfg.seed, num=cfg.data.num_train), test


def check_prompt_lengths(tokenizer, source, problems_: list, max_prompt_length: int) -> None:
  """ValueError naming the longest prompt when it exceeds `rollout.max_prompt_length`."""
  _, ids = rollout.prompt_ids(tokenizer, source, problems_)
  longest = int(np.argmax([len(i) for i in ids])) if ids else 0
  if ids and len(ids[longest]) > max_prompt_length:
    raise ValueError(f"problem {longest} has a prompt of {len(ids[longest])} tokens > "
                     f"rollout.max_prompt_length={max_prompt_length}: raise it, or shorten "
                     f"the template / system prompt")


def run(cfg, workdir: str, *, stop_after: int | None = None, outcome_scorer=None,
        process_scorer=None) -> dict:
  """Train with RL (resuming from `workdir/checkpoints`), evaluate, plot. Returns results.

  Writes `train_metrics.jsonl` (every step), `eval_metrics.jsonl` (step 0, every
  `train.eval_every` steps, the end), `rl_curves.png`, `rl_results.json` and the final
  policy in `policy/` (the SFT policy's format: weights and tokenizer).
  `stop_after` ends this invocation after that many total steps, as an interruption.
  `cfg.mesh_shape` runs on a device mesh (params, optimizer state, reference and value
  head placed by the logical rules; rollouts sharded over the data axes), also across
  `jax.distributed` processes (every process calls `run`; each samples and scores its
  share of the step's prompts, `rollout.RLStep`; process 0 writes the files and the other
  processes return `steps`, `policy_dir` and the `final` evaluation); `cfg.lora.rank`
  > 0 trains LoRA adapters only (the saved policy is merged).
  """
  config_checks.check_values(cfg)  # before anything is written
  os.makedirs(workdir, exist_ok=True)
  slots = -(-cfg.rollout.max_prompt_length // 16) * 16 + max(cfg.rollout.max_new_tokens,
                                                              cfg.eval.max_new_tokens)
  mesh = sharding.make_mesh(tuple(cfg.mesh_shape)) if cfg.get("mesh_shape") else None
  check_mesh_rows(cfg, mesh)
  mconfig, policy_params, tokenizer = load_policy(cfg, slots, mesh)
  source = source_lib.build(cfg.task, tokenizer)
  algo = update_lib.algorithm_from_config(cfg)
  adapters = lora.from_config_dict(cfg.lora) if cfg.get("lora") else lora.LoraConfig()
  params = {"policy": policy_params}
  if algo.uses_values:
    params["value"] = update_lib.init_value_head(mconfig.hidden_size)
    if mesh is not None:
      params["value"] = jax.device_put(params["value"], NamedSharding(mesh, PartitionSpec()))
  tx = update_lib.optimizer_from_config(cfg, algo)
  if adapters.enabled:  # the reference is the base itself: no copy
    params = lora.attach(adapters, params, jax.random.key(cfg.seed + 1), model_config=mconfig,
                         base_key="policy", mesh=mesh)
    ref_params, tx = None, lora.freeze_base(tx, base_key="policy")
  else:
    ref_params = jax.tree.map(jnp.copy, policy_params)  # the state is donated; keep a copy
  state = TrainState.create(params, tx)
  rng = jax.random.PRNGKey(cfg.seed)
  plain_policy = lambda params: lora.materialize(adapters, params, base_key="policy",
                                                 train=False)["policy"]
  reward_fn = rewards.make_reward_fn(cfg.reward.name, **rewards.reward_options(
      cfg.reward, tokenizer, step_separator=source.step_separator,
      outcome_scorer=outcome_scorer, process_scorer=process_scorer))

  train, test = problems(cfg, source)
  check_prompt_lengths(tokenizer, source, train, cfg.rollout.max_prompt_length)
  # Every process reads the same global prompt batch (RLStep splits the work): the prompts
  # of a multi-process run are those of the single-process run.
  data = pipeline.make_iterator([{"index": np.int32(i)} for i in range(len(train))],
                                batch_size=cfg.rollout.batch_size, seed=cfg.seed,
                                shard_index=0, shard_count=1)
  step_fn = rollout.RLStep(
      mconfig, tokenizer, source, train, reward_fn,
      update_lib.make_update(
          mconfig, algo, tx, ref_params, rng, adapters=adapters, mesh=mesh,
          state_shardings=step_lib.state_shardings_of(state) if mesh is not None else None),
      rng=rng, mesh=mesh, policy_params=plain_policy,
      group_size=cfg.rollout.group_size, max_new_tokens=cfg.rollout.max_new_tokens,
      max_prompt_length=cfg.rollout.max_prompt_length, update_groups=cfg.rollout.update_groups,
      temperature=algo.temperature)
  eval_path = os.path.join(workdir, "eval_metrics.jsonl")
  writer = jax.process_index() == 0  # across processes, process 0 writes the files
  last_eval: list[dict] = []
  t_start = time.perf_counter() - loop.elapsed_at_checkpoint(workdir)  # continues on resume

  def run_eval(step: int, params) -> dict:
    record = evaluation.evaluate(
        mconfig, params, tokenizer, source, test, max_new_tokens=cfg.eval.max_new_tokens,
        maj_k=cfg.eval.maj_k, maj_problems=cfg.eval.maj_problems,
        rng=jax.random.PRNGKey(cfg.seed + 7), mesh=mesh)
    record = {"step": step, "elapsed_s": time.perf_counter() - t_start, **record}
    if writer:
      metrics_lib.append_jsonl(eval_path, record)
    last_eval[:] = [record]
    return record

  peek = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  fresh = peek.latest_step() is None
  peek.close()
  if fresh:
    run_eval(0, policy_params)

  def eval_hook(step: int, state) -> dict:
    if step % cfg.train.eval_every and step != cfg.train.steps:
      return {}
    record = run_eval(step, plain_policy(state.params))
    return {f"eval/{k}": v for k, v in record.items() if k != "step" and not isinstance(v, list)}

  result = loop.fit(state, step_fn, data, workdir=workdir, total_steps=cfg.train.steps,
                    log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every,
                    stop_after=stop_after, desc=f"rl-{cfg.reward.name}-{algo.loss}",
                    progress=cfg.progress, extra_metrics=eval_hook,
                    config=config_checks.run_config(
                        cfg, decay=update_lib.optimizer_decay(cfg, algo)))
  if not result.finished:
    return {"stopped_at": int(result.state.step)}
  evals = metrics_lib.read_jsonl(eval_path)
  policy_dir = os.path.join(workdir, "policy")
  final = result.state.params
  if adapters.enabled:  # merged weights in the model's storage dtype
    final = lora.merged_for_export(adapters, final, mconfig, base_key="policy")
  sft.save_policy(policy_dir, mconfig, final["policy"], tokenizer)  # every process calls it
  if not writer:
    return {"steps": int(result.state.step), "policy_dir": policy_dir,
            "process_index": jax.process_index(), "final": last_eval[-1]}
  results = {"steps": int(result.state.step), "rl_seconds_this_run": result.seconds,
             "policy_dir": policy_dir, "num_train_problems": len(train),
             "num_eval_problems": len(test), "skipped_rows": dict(source.skipped),
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
  for i, (kind, keys, title) in enumerate(panels):
    ax = fig.add_subplot(2, 3, i + 1)
    for j, key in enumerate(keys):
      x, y = series(train if kind == "train" else evals, key)
      if x and kind == "eval":
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

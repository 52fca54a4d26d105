"""The RL loop at a tiny size: rewards by name, old log-probs, the update's direction,
GRPO / PPO / TTRL / PRM-shaped runs and exact resumption."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.configs import rl_grpo, rl_ppo, rl_prm, rl_ttrl
from rewardlab import models
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.losses import group_advantages
from rewardlab.rl import rewards, rollout, run, update
from rewardlab.tasks import ArithmeticTask, arithmetic
from rewardlab.tasks import source as source_lib
from rewardlab.train.state import TrainState
from rewardlab.train.step import RetraceError

TOK = CharTokenizer.for_arithmetic()
SOURCE = source_lib.build(source_lib.config(), TOK)
PROBLEM = arithmetic.Problem(3, (("+", 4), ("*", 2)))  # 3+4=7, 7*2=14
GOOD = "3+4=7\n7*2=14\nA:14\n"


def make_rollout(texts, problems, group_size, *, eos=None, width=24):
  """Rollout of hand-written completions; `eos[i]` False leaves row i without EOS."""
  eos = [True] * len(texts) if eos is None else eos
  ids = [TOK.encode(t) + ([TOK.eos_id] if e else []) for t, e in zip(texts, eos)]
  tokens = np.zeros((len(texts), width), np.int32)
  for i, row in enumerate(ids):
    tokens[i, :len(row)] = row
  return rollout.Rollout(problems=list(problems), prompts=[p.prompt for p in problems],
                         texts=list(texts), tokens=tokens,
                         lengths=np.array([len(r) for r in ids]), has_eos=np.array(eos),
                         group_size=group_size, task=ArithmeticTask(), tokenizer=TOK)


# --------------------------------------------------------------------------- rewards


def test_verifier_and_ttrl_rewards():
  other = arithmetic.Problem(5, (("-", 2), ("+", 1)))  # answer 4
  texts = [GOOD, "3+4=7\n7*2=15\nA:15\n", "A:14\n", "1+1=2", "A:4\n", "A:5\n", "QQ", "A:5\n"]
  ro = make_rollout(texts, [PROBLEM] * 4 + [other] * 4, group_size=4)
  v = rewards.get_reward("verifier")(ro)
  np.testing.assert_array_equal(v.scores, [1, 0, 1, 0, 1, 0, 0, 0])
  assert v.token_rewards.shape == (8, 24) and not v.token_rewards.any()
  t = rewards.get_reward("ttrl")(ro)
  # Group 1: answers 14, 15, 14, None -> majority 14. Group 2: 4, 5, None, 5 -> 5 (wrong).
  np.testing.assert_array_equal(t.scores, [1, 0, 1, 0, 0, 1, 0, 1])
  np.testing.assert_array_equal(t.correct, v.correct)
  assert t.metrics["ttrl_label_accuracy"] == 0.5


def test_outcome_rm_reward_calls_the_scorer_with_text():
  calls = []

  class LengthScorer:
    def score(self, prompts, completions):
      calls.append((list(prompts), list(completions)))
      return np.array([len(c) for c in completions], np.float32)

  ro = make_rollout([GOOD, "A:14\n"], [PROBLEM] * 2, group_size=2)
  r = rewards.make_reward_fn("outcome_rm", outcome_scorer=LengthScorer())(ro)
  np.testing.assert_array_equal(r.scores, [len(GOOD), 5])
  assert calls == [([PROBLEM.prompt] * 2, [GOOD, "A:14\n"])]


class ScriptedPRM:
  """Step probabilities looked up by step text (default 0.5)."""

  def __init__(self, table):
    self.table, self.calls = table, []

  def score_steps(self, prompts, steps):
    self.calls.append([list(s) for s in steps])
    return [np.array([self.table.get(x, 0.5) for x in s], np.float32) for s in steps]


def test_prm_dense_places_clip_delta_rewards_at_step_ends():
  prm = ScriptedPRM({"3+4=7": 0.9, "7*2=14": 0.2, "A:14": 0.7, "3+4=8": 0.1})
  texts = [GOOD, "3+4=8\n8*2=1"]  # the second is truncated: one finished step, no EOS
  ro = make_rollout(texts, [PROBLEM] * 2, group_size=2, eos=[True, False])
  r = rewards.make_reward_fn("prm_dense", process_scorer=prm, eta=0.5,
                                success_weight=1.0)(ro)
  assert prm.calls == [[["3+4=7", "7*2=14", "A:14"], ["3+4=8"]]]
  # Clip: min(p - 0.5, 0) = [0, -0.3, 0]; Delta: [0 - (-0.3), -0.3 - 0, 0].
  expected = np.zeros((2, 24), np.float32)
  expected[0, [5, 12, 17]] = [0.3, -0.3, 0.0]
  expected[0, 18] += 1.0  # success at the EOS (length 19)
  # Row 2: its only step is its last step -> 0; wrong answer -> no success reward.
  np.testing.assert_allclose(r.token_rewards, expected, atol=1e-6)
  np.testing.assert_allclose(r.returns, [1.0, 0.0], atol=1e-6)


def test_prm_dense_repeating_good_steps_cannot_raise_the_return():
  prm = ScriptedPRM({"3+4=7": 0.99, "A:14": 0.3})
  short = "3+4=7\nA:14\n"
  padded = "3+4=7\n" * 6 + "A:14\n"
  ro = make_rollout([short, padded], [PROBLEM] * 2, group_size=2, width=48)
  r = rewards.make_reward_fn("prm_dense", process_scorer=prm, eta=0.5)(ro)
  assert r.returns[1] <= r.returns[0] + 1e-6


def test_informative_groups_come_first_and_rows_stay_grouped():
  returns = np.array([1, 1, 0, 1, 0, 0, 1, 0], np.float32)  # groups of 2: spread 0, 1, 0, 1
  np.testing.assert_array_equal(rollout.informative_groups(returns, 2, 2), [1, 3])
  np.testing.assert_array_equal(rollout.informative_groups(returns, 2, 3), [0, 1, 3])
  batch = {"scores": returns, "tokens": np.arange(16).reshape(8, 2)}
  taken = rollout.take_groups(batch, np.array([1, 3]), 2)
  np.testing.assert_array_equal(taken["scores"], [0, 1, 1, 0])
  np.testing.assert_array_equal(taken["tokens"][:, 0], [4, 6, 12, 14])
  with pytest.raises(ValueError, match="keep=5 groups out of 4"):
    rollout.informative_groups(returns, 2, 5)


def test_reward_errors_are_clear():
  with pytest.raises(ValueError, match="unknown reward 'nope'"):
    rewards.get_reward("nope")
  ro = make_rollout([GOOD], [PROBLEM], group_size=1)

  class Short:
    def score_steps(self, prompts, steps):
      return [np.array([0.5])]

  with pytest.raises(ValueError, match="1 step scores for completion 0, which has 3 steps"):
    rewards.make_reward_fn("prm_dense", process_scorer=Short())(ro)
  with pytest.raises(ValueError, match="group_size=3 must divide"):
    make_rollout([GOOD, GOOD], [PROBLEM] * 2, group_size=3)
  with pytest.raises(ValueError, match="advantage 'gae' goes with loss 'ppo'"):
    update.Algorithm(advantage="gae", loss="grpo")


# --------------------------------------------------------------------------- update


@pytest.fixture(scope="module")
def tiny_policy():
  """A random policy and one rollout with the shapes of the tiny runs (shared compiles)."""
  cfg = rl_grpo.tiny()
  config, params, tok = run.load_policy(cfg, 64)
  problems = [PROBLEM, arithmetic.Problem(12, (("-", 5), ("+", 30)))]
  ro, batch = rollout.sample_rollout(
      config, params, tok, SOURCE, problems, group_size=cfg.rollout.group_size,
      max_new_tokens=cfg.rollout.max_new_tokens, rng=jax.random.PRNGKey(0),
      max_prompt_length=cfg.rollout.max_prompt_length)
  return config, params, ro, batch


def test_old_logprobs_equal_the_samplers(tiny_policy):
  config, params, ro, batch = tiny_policy
  out = jax.jit(update.policy_outputs, static_argnums=0)(config, {"policy": params},
                                                      jax.tree.map(jnp.asarray, batch))
  mask = batch["completion_mask"].astype(bool)
  assert mask.sum() > 10 and ro.lengths.min() >= 1
  np.testing.assert_allclose(np.asarray(out["logp"])[mask], batch["sampler_logprobs"][mask],
                             atol=1e-4)
  assert np.all(np.asarray(out["logp"])[mask] < 0)


def _full_logits(config, params, data):
  """The completion tokens' full logits [N, T, V] by the plain forward pass (reference)."""
  hidden = models.hidden_states(config, params, data["tokens"],
                                attention_mask=data["attention_mask"])
  h = jnp.take_along_axis(hidden, data["completion_index"][..., None], axis=1)
  return models.unembed(config, params, h).astype(jnp.float32)


def test_old_logprobs_equal_the_samplers_at_a_lower_temperature(tiny_policy):
  # Rollouts at temperature 0.7: the update's log-probs must be those of softmax(z / 0.7).
  config, params, _, _ = tiny_policy
  cfg = rl_grpo.tiny()
  tok = CharTokenizer.for_arithmetic()  # the tiny random policy's tokenizer
  ro, batch = rollout.sample_rollout(
      config, params, tok, SOURCE, [PROBLEM], group_size=cfg.rollout.group_size,
      max_new_tokens=cfg.rollout.max_new_tokens, rng=jax.random.PRNGKey(1),
      max_prompt_length=cfg.rollout.max_prompt_length, temperature=0.7)
  data = jax.tree.map(jnp.asarray, batch)
  mask = batch["completion_mask"].astype(bool)
  assert mask.sum() > 10
  tempered = update.policy_outputs(config, {"policy": params}, data, temperature=0.7)
  plain = update.policy_outputs(config, {"policy": params}, data)
  # The sampler reports untempered log-probs; the update's are those of softmax(z / 0.7).
  np.testing.assert_allclose(np.asarray(plain["logp"])[mask],
                             batch["sampler_logprobs"][mask], atol=1e-4)
  expected = jnp.take_along_axis(jax.nn.log_softmax(_full_logits(config, params, data) / 0.7),
                                 data["completion_tokens"][..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(np.asarray(tempered["logp"])[mask], np.asarray(expected)[mask],
                             atol=1e-5)
  full = jax.nn.log_softmax(_full_logits(config, params, data) / 0.7)
  np.testing.assert_allclose(tempered["entropy"], -jnp.sum(jnp.exp(full) * full, -1), atol=1e-5)
  with_untempered = update.policy_outputs(config, {"policy": params}, data, temperature=0.7,
                                          untempered=True)
  np.testing.assert_allclose(with_untempered["untempered_logp"], plain["logp"], atol=1e-6)
  assert np.abs(np.asarray(tempered["logp"] - plain["logp"])[mask]).max() > 1e-2
  with pytest.raises(ValueError, match="temperature must be positive"):
    update.Algorithm(temperature=0.0)


def test_learning_rate_schedules():
  # Warmup 4 steps to 1e-4, then a cosine to 1e-5 at optimizer step 24 (n = 23).
  lr = lambda n, *a: float(update.lr_schedule(1e-4, 4, *a)(jnp.float32(n)))
  assert [lr(n) for n in (0, 1, 3, 50)] == pytest.approx([2.5e-5, 5e-5, 1e-4, 1e-4])
  cosine = lambda n: lr(n, 24, 0.1)
  assert cosine(0) == pytest.approx(2.5e-5) and cosine(3) == pytest.approx(1e-4)
  assert cosine(13) == pytest.approx(5.5e-5)  # halfway: (1 + 0.1) / 2 · 1e-4
  assert cosine(23) == pytest.approx(1e-5) and cosine(100) == pytest.approx(1e-5)
  assert all(cosine(n) >= cosine(n + 1) for n in range(3, 30))
  cfg = rl_grpo.get_config().unlock()
  algo = update.algorithm_from_config(cfg)
  assert update.optimizer_decay(cfg, algo) == (0, 1.0)
  cfg.optim.decay = "cosine"
  assert update.optimizer_decay(cfg, algo) == (cfg.train.steps * algo.updates_per_step, 0.1)
  cfg.optim.decay = "linear"
  with pytest.raises(ValueError, match="optim.decay='linear'"):
    update.optimizer_decay(cfg, algo)


def _mean_token_logp(config, params, batch):
  out = update.policy_outputs(config, {"policy": params}, jax.tree.map(jnp.asarray, batch))
  mask = batch["completion_mask"]
  return np.asarray((out["logp"] * mask).sum(-1) / np.maximum(mask.sum(-1), 1))


@pytest.mark.parametrize("module", [rl_grpo, rl_ppo])
def test_update_raises_the_likelihood_of_rewarded_completions(tiny_policy, module):
  # The tiny runs' algorithm, optimizer and shapes.
  cfg = module.tiny()
  config, params, ro, batch = tiny_policy
  scores = np.array([1, 0, 0, 1], np.float32)  # two winners in the first group of 4
  batch = rollout.take_groups({**batch, "has_eos": ro.has_eos}, np.array([0]), 4)
  batch.update(scores=scores, token_rewards=np.zeros_like(batch["sampler_logprobs"]))
  algo = update.algorithm_from_config(cfg)
  tx = update.optimizer_from_config(cfg, algo)
  state_params = {"policy": jax.tree.map(jnp.copy, params)}
  if algo.uses_values:
    state_params["value"] = update.init_value_head(config.hidden_size)
  state = TrainState.create(state_params, tx)
  update_fn = update.make_update(config, algo, tx, jax.tree.map(jnp.copy, params),
                                 jax.random.PRNGKey(0))
  state, metrics = update_fn(state, jax.tree.map(jnp.asarray, batch))
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
  assert float(metrics["sampler_logprob_diff"]) < 1e-4
  delta = (_mean_token_logp(config, state.params["policy"], batch)
           - _mean_token_logp(config, params, batch))
  assert delta[scores == 1].mean() > delta[scores == 0].mean()
  if algo.loss == "grpo":  # the grpo surrogate is Σ_i A_i · mean_t log π: it must rise
    adv = np.asarray(group_advantages(jnp.asarray(scores), algo.group_size))
    assert float(adv @ delta) > 0
  with pytest.raises(RetraceError):
    update_fn(state, jax.tree.map(lambda x: jnp.asarray(x)[:2], batch))


def test_sampler_old_logprobs_and_a_strided_reference_follow_the_full_update(tiny_policy):
  # π_old from the sampler (no forward pass) and π_ref on every 2nd completion only
  # (β = 0): the same update as recomputing both, and the logged KL is the strided rows'.
  cfg = rl_grpo.tiny()
  config, params, ro, batch = tiny_policy
  batch = {**batch, "has_eos": ro.has_eos,
           "scores": np.array([1, 0, 0, 1, 0, 1, 1, 1], np.float32),
           "token_rewards": np.zeros_like(batch["sampler_logprobs"])}
  data = jax.tree.map(jnp.asarray, batch)
  # A reference away from the policy, so that the KL is not zero.
  ref = jax.tree.map(lambda x: x * 0.8, params)
  full_algo = update.algorithm_from_config(cfg)
  tx = update.make_optimizer(1e-3, 1, 0.0, 1.0)
  runs = {}
  for name, algo in [("full", full_algo),
                     ("fast", dataclasses.replace(full_algo, old_logprobs="sampler",
                                                  kl_monitor_every=2))]:
    state = TrainState.create({"policy": jax.tree.map(jnp.copy, params)}, tx)
    runs[name] = update.make_update(config, algo, tx, ref, jax.random.PRNGKey(0))(state, data)
  (full_state, full), (fast_state, fast) = runs["full"], runs["fast"]
  assert "kl" in full and "kl" not in fast  # the loss sees no reference at stride 2
  assert "sampler_logprob_diff" in full and "sampler_logprob_diff" not in fast
  for key in ("loss", "grad_norm", "clip_fraction", "advantage_abs"):
    np.testing.assert_allclose(float(fast[key]), float(full[key]), rtol=1e-3, atol=1e-6)
  step = lambda s: np.concatenate([np.ravel(np.asarray(a) - np.asarray(b)) for a, b in zip(
      jax.tree.leaves(s.params["policy"]), jax.tree.leaves(params))])
  moved = np.abs(step(full_state)).mean()
  assert moved > 1e-4 and np.abs(step(fast_state) - step(full_state)).mean() < 0.01 * moved
  # The logged KL: k3 of the sampler's log-probs against π_ref, rows 0, 2, 4, 6.
  ref_logp = update.policy_outputs(config, {"policy": ref}, data)["logp"]
  mask = batch["completion_mask"].astype(bool)
  delta = np.asarray(ref_logp) - batch["sampler_logprobs"]
  k3 = np.where(mask, np.exp(delta) - delta - 1, 0.0)
  strided = k3[::2].sum() / mask[::2].sum()
  assert float(fast["kl_ref_rollout"]) == pytest.approx(strided, rel=1e-3)
  assert float(full["kl_ref_rollout"]) == pytest.approx(k3.sum() / mask.sum(), rel=1e-3)
  assert abs(strided - k3.sum() / mask.sum()) > 1e-4  # the rows do differ
  for kwargs, message in [({"old_logprobs": "cache"}, "old_logprobs must be"),
                          ({"old_logprobs": "sampler", "temperature": 0.7}, "temperature 1"),
                          ({"old_logprobs": "sampler", "advantage": "gae", "loss": "ppo"},
                           "V_old"),
                          ({"kl_monitor_every": 0}, "kl_monitor_every must be")]:
    with pytest.raises(ValueError, match=message):
      update.Algorithm(**kwargs)


# --------------------------------------------------------------------------- runs


def _final_state(workdir):
  manager = ocp.CheckpointManager(str(workdir / "checkpoints"))
  restored = manager.restore(manager.latest_step(),
                             args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return restored["state"]


_TIMING = ("sample_seconds", "step_seconds", "tokens_per_s", "eval/elapsed_s")


def _records(path):
  return [{k: v for k, v in json.loads(line).items() if k not in _TIMING}
          for line in open(path)]


def test_grpo_run_resumes_exactly(tmp_path):
  cfg = rl_grpo.tiny()
  full = run.run(cfg, str(tmp_path / "full"))
  assert full["steps"] == cfg.train.steps
  assert run.run(cfg, str(tmp_path / "resumed"), stop_after=2) == {"stopped_at": 2}
  run.run(cfg, str(tmp_path / "resumed"))
  a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "resumed")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  records = _records(tmp_path / "full" / "train_metrics.jsonl")
  assert records == _records(tmp_path / "resumed" / "train_metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for key in ("reward_mean", "reward_std", "accuracy", "kl", "entropy", "clip_fraction",
              "response_length", "grad_norm", "loss", "eval/pass1_greedy"):
    assert key in records[-1] and np.isfinite(records[-1][key]), key
  assert max(r["sampler_logprob_diff"] for r in records) < 1e-4
  assert all(r["update_informative_fraction"] in (0.0, 1.0) for r in records)
  evals = [json.loads(l) for l in open(tmp_path / "full" / "eval_metrics.jsonl")]
  assert [e["step"] for e in evals] == [0, 2, 4] and "maj4" in evals[0]
  for e in evals:  # per-problem outcomes for paired comparisons, not in the step metrics
    assert np.mean(e["greedy_correct"]) == pytest.approx(e["pass1_greedy"])
  assert not any(isinstance(v, list) for r in records for v in r.values())
  assert (tmp_path / "full" / "rl_curves.png").stat().st_size > 10_000
  assert json.loads((tmp_path / "full" / "rl_results.json").read_text())["steps"] == 4


def test_the_weak_variant_runs_with_sampler_logprobs_and_a_strided_kl(tmp_path):
  # The committed `:weak` algorithm at a tiny size: π_old from the sampler, π_ref on every
  # 8th completion, the cosine schedule; the loop logs the strided KL and no sampler check.
  weak = rl_grpo.get_config("weak")
  assert (weak.algo.old_logprobs, weak.algo.kl_monitor_every) == ("sampler", 8)
  assert weak.rollout.update_groups < weak.rollout.batch_size
  cfg = rl_grpo.shrink(weak).unlock()
  cfg.train.steps, cfg.train.eval_every = 2, 2
  result = run.run(cfg.lock(), str(tmp_path))
  assert result["steps"] == 2
  records = [json.loads(line) for line in open(tmp_path / "train_metrics.jsonl")]
  assert all(np.isfinite(r["kl_ref_rollout"]) and r["kl_ref_rollout"] > -1e-6 for r in records)
  assert not any("sampler_logprob_diff" in r or "kl" in r for r in records)
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in records)


class LengthRM:
  """Outcome scorer that prefers short completions: r = 1 - len / 12."""

  def score(self, prompts, completions):
    return np.array([1.0 - len(c) / 12 for c in completions], np.float32)


def test_ppo_run_with_an_outcome_rm_trains_the_value_head(tmp_path):
  cfg = rl_ppo.tiny().unlock()
  cfg.reward.name = "outcome_rm"
  result = run.run(cfg.lock(), str(tmp_path), outcome_scorer=LengthRM())
  assert result["steps"] == cfg.train.steps
  state = _final_state(tmp_path)
  assert float(np.abs(np.asarray(state["params"]["value"]["kernel"])).sum()) > 0
  records = _records(tmp_path / "train_metrics.jsonl")
  assert all(np.isfinite(r["value_loss"]) for r in records)
  assert "value_clip_fraction" in records[-1] and "rm_score_correct_corr" in records[-1]


def test_ttrl_run_uses_majority_labels_on_eval_prompts(tmp_path):
  result = run.run(rl_ttrl.tiny(), str(tmp_path))
  assert result["steps"] == 4
  last = _records(tmp_path / "train_metrics.jsonl")[-1]
  assert 0.0 <= last["ttrl_label_accuracy"] <= 1.0


def test_prm_run_with_a_scripted_scorer(tmp_path):
  prm = ScriptedPRM({})
  result = run.run(rl_prm.tiny(), str(tmp_path), process_scorer=prm)
  assert result["steps"] == 4 and len(prm.calls) == 4
  last = _records(tmp_path / "train_metrics.jsonl")[-1]
  assert "prm_step_prob" in last

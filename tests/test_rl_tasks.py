"""RL beyond the synthetic task: every registered loss through the config with its own
defaults, rewards for any task (math-verify, multi-token step separators), a reward
model on another tokenizer refused, and a run on GSM8K-format files with a Hugging Face
policy and its own tokenizer."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import rl_grpo
from rewardlab.data import tokenizers as tk
from rewardlab.losses.registry import POLICY_LOSSES, get_policy_loss
from rewardlab.rl import rewards, rollout, run, update
from rewardlab.tasks import ArithmeticTask, MathProblem, MathTask, arithmetic

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# --------------------------------------------------------------------------- losses


def _loss_batch():
  """Two groups of 2 rows, 3 tokens; every token's ratio to π_old is e^0.01 ≈ 1.01."""
  rng = np.random.default_rng(0)
  logp = jnp.asarray(-rng.uniform(0.5, 2.0, (4, 3)), jnp.float32)
  mb = {"completion_mask": jnp.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], jnp.int32),
        "old_logp": logp - 0.01,
        "advantages": jnp.array([1.0, -1.0, 1.0, -1.0]),
        "old_values": jnp.zeros((4, 3)), "returns": jnp.ones((4, 3))}
  return logp, mb


@pytest.fixture
def fake_forward(monkeypatch):
  """`policy_outputs` that returns the log-probs stored as the "policy" params (no model)."""
  def outputs(config, params, batch, *, temperature=1.0, untempered=False):
    out = {"logp": params["policy"], "entropy": jnp.full(params["policy"].shape, jnp.log(5.0))}
    if untempered:
      out["untempered_logp"] = params["policy"]
    if "value" in params:
      out["values"] = params["value"]
    return out
  monkeypatch.setattr(update, "policy_outputs", outputs)


def _algo(loss: str, **algo_fields) -> update.Algorithm:
  cfg = rl_grpo.get_config().unlock()
  cfg.algo.loss = loss
  if loss == "ppo":
    cfg.algo.advantage = "gae"
  for key, value in algo_fields.items():
    cfg.algo[key] = value
  return update.algorithm_from_config(cfg.lock())


@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_every_registered_loss_keeps_its_own_clip_defaults_through_the_config(name, fake_forward):
  logp, mb = _loss_batch()
  algo = _algo(name)
  assert (algo.epsilon, algo.epsilon_high, algo.dual_clip) == (None, None, None)
  params = {"policy": logp, "value": jnp.zeros((4, 3))} if algo.uses_values else {"policy": logp}
  loss, metrics = update.rl_loss(params, mb, config=None, algo=algo)
  extra = ({"values": params["value"], "old_values": mb["old_values"], "returns": mb["returns"],
            "vf_coef": algo.vf_coef, "value_clip": algo.value_clip} if algo.uses_values else {})
  direct, direct_metrics = get_policy_loss(name)(
      logp, mb["old_logp"], mb["advantages"], mb["completion_mask"], ref_logp=None,
      kl_coef=0.0, kl_estimator="k3", **extra)  # the loss's own defaults
  np.testing.assert_allclose(float(loss), float(direct), rtol=1e-6)
  for key in ("clip_fraction", "clip_fraction_low", "clip_fraction_high"):
    assert float(metrics[key]) == float(direct_metrics[key]), key
  # A ratio of 1.01 is clipped only by GSPO's (3e-4, 4e-4) range, not by ε = 0.2 / 0.28.
  assert (float(metrics["clip_fraction"]) > 0) == (name == "gspo")
  # Before the fix, ε = 0.2 reached every loss, so GSPO clipped nothing here.
  if name == "gspo":
    assert float(metrics["clip_fraction_high"]) == pytest.approx(4 / 9)  # the A > 0 tokens


@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_a_configured_clip_range_overrides_every_loss(name, fake_forward):
  logp, mb = _loss_batch()
  algo = _algo(name, epsilon=0.005, epsilon_high=0.005)
  params = {"policy": logp, "value": jnp.zeros((4, 3))} if algo.uses_values else {"policy": logp}
  _, metrics = update.rl_loss(params, mb, config=None, algo=algo)
  assert float(metrics["clip_fraction_high"]) == pytest.approx(4 / 9)  # 1.01 > 1.005 where A > 0
  assert float(metrics["clip_fraction_low"]) == 0.0  # 1.01 is never below 0.995


def test_unset_clip_options_pass_nothing_and_set_ones_pass_through():
  assert update.Algorithm().clip_options() == {}
  assert update.Algorithm(epsilon=0.1, dual_clip=3.0).clip_options() == {
      "epsilon": 0.1, "dual_clip": 3.0}


# --------------------------------------------------------------------------- rewards


class WordTokenizer:
  """Whole-string tokens (like BPE merges across a newline): id i is `PIECES[i]`."""

  PIECES = ["<pad>", "<s>", "</s>", "3+4=7", "\n", "7*2=14", ".\n\n", "A:14", "\n\n",
            "\n\n\n\n", "x"]
  pad_id, bos_id, eos_id = 0, 1, 2
  vocab_size = len(PIECES)

  def encode(self, text, *, add_bos=False):
    raise NotImplementedError

  def decode(self, ids, *, skip_special=True):
    return "".join(self.PIECES[i] for i in ids if not (skip_special and i < 3))


def _rollout(token_rows, task, problems, separator, tokenizer, group_size=None):
  width = max(len(r) for r in token_rows) + 2
  tokens = np.zeros((len(token_rows), width), np.int32)
  for i, r in enumerate(token_rows):
    tokens[i, :len(r)] = r
  texts = [tokenizer.decode(r) for r in token_rows]
  return rollout.Rollout(problems=problems, prompts=["q"] * len(problems), texts=texts,
                         tokens=tokens, lengths=np.array([len(r) for r in token_rows]),
                         has_eos=np.array([r[-1] == 2 for r in token_rows]),
                         group_size=group_size or len(problems), task=task,
                         tokenizer=tokenizer, step_separator=separator)


def test_step_ends_with_a_multi_token_separator_and_merged_tokens():
  tok = WordTokenizer()
  # "3+4=7" "\n" "\n" | "7*2=14" ".\n\n" | "A:14" "\n\n" </s>
  assert rollout.step_ends(tok, [3, 4, 4, 5, 6, 7, 8, 2], "\n\n").tolist() == [2, 4, 6]
  assert rollout.step_ends(tok, [3, 9, 7], "\n\n").tolist() == [1, 1]  # one token, two ends
  assert rollout.step_ends(tok, [3, 4, 7], "\n\n").tolist() == []
  assert rollout.step_ends(tok, [3, 4, 7, 4], "\n").tolist() == [1, 3]


class TextPRM:
  def __init__(self, table):
    self.table, self.calls = table, []

  def score_steps(self, prompts, steps):
    self.calls.append([list(s) for s in steps])
    return [np.array([self.table.get(x, 0.5) for x in s], np.float32) for s in steps]


def test_prm_dense_splits_decoded_text_on_a_multi_token_separator():
  tok = WordTokenizer()
  problem = arithmetic.Problem(3, (("+", 4), ("*", 2)))
  ro = _rollout([[3, 4, 4, 5, 6, 7, 8, 2], [3, 9, 10]], ArithmeticTask(), [problem] * 2,
                "\n\n", tok)
  prm = TextPRM({"3+4=7": 0.9, "7*2=14.": 0.2, "A:14": 0.7, "": 0.4})
  r = rewards.make_reward_fn("prm_dense", process_scorer=prm, eta=0.5)(ro)
  assert prm.calls == [[["3+4=7", "7*2=14.", "A:14"], ["3+4=7", ""]]]
  expected = np.zeros_like(r.token_rewards)
  expected[0, [2, 4, 6]] = [0.3, -0.3, 0.0]  # Clip [0, -0.3, 0], Delta
  expected[0, 7] += 1.0  # right answer (A:14), success at the EOS
  expected[1, 1] = 0.1  # steps "3+4=7", "": Clip [0, -0.1], Delta [0.1, 0], both at token 1
  np.testing.assert_allclose(r.token_rewards, expected, atol=1e-6)


def test_verifier_and_ttrl_on_the_math_task_use_math_verify_answers():
  task = MathTask()
  p1, p2 = MathProblem("What is half of 1?", "1/2"), MathProblem("2+2?", "4")
  texts = ["so \\boxed{\\frac{1}{2}}", "it is \\boxed{0.5}", "\\boxed{2}", "no idea",
           "\\boxed{4}", "\\boxed{5}", "\\boxed{5}", "\\boxed{4.0}"]
  tok = tk.CharTokenizer("abcdefghijklmnopqrstuvwxyz0123456789 \\{}./?+")
  ro = rollout.Rollout(problems=[p1] * 4 + [p2] * 4, prompts=["q"] * 8, texts=texts,
                       tokens=np.zeros((8, 4), np.int32), lengths=np.ones(8, int),
                       has_eos=np.ones(8, bool), group_size=4, task=task, tokenizer=tok)
  v = rewards.get_reward("verifier")(ro)
  np.testing.assert_array_equal(v.scores, [1, 1, 0, 0, 1, 0, 0, 1])
  t = rewards.get_reward("ttrl")(ro)
  # Group 1: 1/2, 1/2 (0.5 canonical), 2, None -> majority 1/2 (right).
  # Group 2: 4, 5, 5, 4 -> tie, first seen 4 (right).
  np.testing.assert_array_equal(t.scores, [1, 1, 0, 0, 1, 0, 0, 1])
  assert t.metrics["ttrl_label_accuracy"] == 1.0


def test_a_reward_model_on_another_tokenizer_is_refused(tmp_path):
  from rewardlab.models import reward as rm
  from rewardlab.models.config import TransformerConfig

  policy_tok = tk.CharTokenizer.for_arithmetic()
  other = tk.CharTokenizer(arithmetic.ALPHABET + "B")
  rewards.check_same_tokenizer(policy_tok, tk.CharTokenizer.for_arithmetic(), "rm")
  with pytest.raises(ValueError, match="trained with tokenizer .*vocab_size 22.* the policy "
                                       "uses .*vocab_size 21"):
    rewards.check_same_tokenizer(policy_tok, other, "rm")
  backbone = TransformerConfig(vocab_size=24, hidden_size=16, num_layers=1, num_heads=2,
                               num_kv_heads=2, intermediate_size=32, max_position_embeddings=64)
  config = rm.RewardModelConfig(backbone=backbone, head="outcome")
  rm.save_reward_model(str(tmp_path), config, rm.init_reward_model(config, jax.random.key(0)),
                       other)
  cfg = rl_grpo.tiny().unlock()
  cfg.reward.name, cfg.reward.model_dir = "outcome_rm", str(tmp_path)
  with pytest.raises(ValueError, match=f"reward model at {tmp_path} was trained with"):
    rewards.reward_options(cfg.reward, policy_tok, step_separator="\n")


# --------------------------------------------------------------------------- a math run


GSM8K_ROWS = [
    {"question": "Ann has 3 apples and gets 4 more. How many apples?",
     "answer": "She has 3+4 = 7 apples.\n#### 7"},
    {"question": "A box holds 2 pens. How many pens in 3 boxes?",
     "answer": "3*2 = 6 pens.\n#### 6"},
    {"question": "Tim had 9 cards and gave away 5. How many are left?",
     "answer": "9-5 = 4 cards.\n#### 4"},
    {"question": "What is 10 divided by 4?", "answer": "10/4 = 2.5\n#### 2.5"},
]


@pytest.mark.slow
def test_grpo_runs_on_gsm8k_files_with_a_hugging_face_policy(tmp_path):
  from hf_models import make_model, save_model
  from test_task_source import CHAT_TEMPLATE
  from test_tokenizers import _save_bpe

  policy_dir = tmp_path / "policy"
  fast = _save_bpe(policy_dir, chat_template=CHAT_TEMPLATE)
  save_model(make_model("llama", vocab_size=len(fast)), policy_dir)
  files = []
  malformed = {"question": "No answer marker here", "answer": "it is 3"}
  for name, rows in (("train.jsonl", GSM8K_ROWS[:2] + [malformed] + GSM8K_ROWS[2:]),
                     ("test.jsonl", GSM8K_ROWS[:3])):
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    files.append(str(tmp_path / name))
  cfg = rl_grpo.tiny().unlock()
  cfg.policy_dir = str(policy_dir)
  cfg.task.name, cfg.task.train_files, cfg.task.eval_files = "math", *files
  cfg.task.step_separator, cfg.task.strict = "\n\n", False  # the malformed row: skipped
  cfg.rollout.max_prompt_length, cfg.rollout.max_new_tokens = 192, 8
  cfg.eval.max_new_tokens, cfg.eval.num_problems = 8, 0
  cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = 2, 2, 2
  result = run.run(cfg.lock(), str(tmp_path / "run"))
  assert result["steps"] == 2 and result["num_train_problems"] == 4
  assert result["num_eval_problems"] == 3
  assert result["skipped_rows"] == {files[0]: 1, files[1]: 0}
  assert len(result["final"]["greedy_correct"]) == 3
  assert not any(k.startswith("pass1_greedy_k") for k in result["final"])
  records = [json.loads(l) for l in open(tmp_path / "run" / "train_metrics.jsonl")]
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 for r in records)
  # The saved policy keeps the Hugging Face tokenizer and its chat template.
  saved = tk.load_tokenizer(result["policy_dir"])
  assert isinstance(saved, tk.HFTokenizer) and saved.has_chat_template

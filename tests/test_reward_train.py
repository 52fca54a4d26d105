"""Reward-model trainer: every kind end to end at a tiny size, exact resume, data paths."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rewardlab
from experiments.configs import rm_bt, rm_genarm, rm_prm, rm_regression, rm_scaled_bt
from rewardlab import models
from rewardlab.data import encode
from rewardlab.data.formats import PreferencePair
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.eval import reward_model as report_lib
from rewardlab.models import reward as reward_lib
from rewardlab.tasks import arithmetic, rm_data
from rewardlab.train import reward
from rewardlab.train import state as state_lib

TOK = CharTokenizer.for_arithmetic()


def test_every_kind_is_registered_by_name():
  assert reward.OBJECTIVES.names() == ("bt", "genarm", "prm", "regression", "scaled_bt")
  assert reward.OBJECTIVES.get("prm").head == "process"
  with pytest.raises(ValueError, match="unknown reward-model kind 'ppo'"):
    reward.OBJECTIVES.get("ppo")


def _leaves(model_dir):
  _, params, _ = reward_lib.load_reward_model(model_dir)
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_interrupted_bt_run_resumes_exactly(tmp_path):
  cfg = rm_bt.tiny()
  full = reward.run(cfg, str(tmp_path / "full"))
  assert full["steps"] == cfg.train.steps and full["kind"] == "bt"
  assert reward.run(cfg, str(tmp_path / "resumed"), stop_after=4) == {"stopped_at": 4}
  resumed = reward.run(cfg, str(tmp_path / "resumed"))
  for a, b in zip(_leaves(full["reward_model_dir"]), _leaves(resumed["reward_model_dir"])):
    np.testing.assert_array_equal(a, b)
  lines = [json.loads(l) for l in open(tmp_path / "resumed" / "train_metrics.jsonl")]
  assert [l["step"] for l in lines] == [2, 4, 6]
  assert {"loss", "accuracy", "margin", "lr", "grad_norm", "tokens_per_s"} <= set(lines[-1])
  report = json.loads((tmp_path / "full" / "rm_results.json").read_text())
  assert 0.0 <= report["eval"]["pairwise_accuracy"] <= 1.0
  assert report["eval"]["num_pairs"] == cfg.data.num_eval_problems
  assert {"ece", "brier", "auroc"} <= set(report["eval"]["calibration"])
  assert (tmp_path / "full" / "rm_results_reliability.png").stat().st_size > 0


def _check_run(results, tmp_path, head):
  config, _, tokenizer = reward_lib.load_reward_model(results["reward_model_dir"])
  assert config.head == head and tokenizer == TOK
  lines = [json.loads(l) for l in open(tmp_path / "train_metrics.jsonl")]
  assert np.isfinite(lines[-1]["loss"]) and lines[-1]["grad_norm"] > 0
  return config


def test_prm_trains_and_reports_processbench_f1(tmp_path):
  cfg = rm_prm.tiny()
  results = reward.run(cfg, str(tmp_path))
  assert results["steps"] == cfg.train.steps
  report = results["eval"]
  assert 0.0 <= report["processbench_f1"] <= 1.0 and report["num_solutions"] == 16
  assert {"ece", "brier", "auroc"} <= set(report["calibration"])
  assert "step_accuracy" in json.loads((tmp_path / "train_metrics.jsonl").read_text().split("\n")[0])
  _check_run(results, tmp_path, "process")


def test_genarm_form_prm_trains_its_bias_faster_with_the_head_multiplier(tmp_path):
  cfg = rm_prm.tiny().unlock()
  cfg.model.process_form, cfg.model.step_beta, cfg.model.step_bias = "genarm", 1.0, 2.0
  cfg.train.learning_rate, cfg.train.head_lr_multiplier = 1e-4, 100.0
  results = reward.run(cfg.lock(), str(tmp_path))
  assert 0.0 <= results["eval"]["processbench_f1"] <= 1.0
  config, params, _ = reward_lib.load_reward_model(results["reward_model_dir"])
  assert config.process_form == "genarm" and config.beta == 1.0 and config.step_bias == 2.0
  # Adam moves a parameter by about the learning rate per step: the bias (head) moved
  # ~100x further than the backbone's 1e-4 per step could take it.
  moved = abs(float(params["head"]["bias"][0]) - 2.0)
  assert moved > 10 * 1e-4 * cfg.train.steps


def test_scale_subtree_scales_only_that_subtree():
  tx = state_lib.scale_subtree(optax.sgd(1.0), "head", 10.0)
  params = {"backbone": {"w": jnp.ones(3)}, "head": {"b": jnp.ones(1)}}
  grads = {"backbone": {"w": jnp.full(3, 0.5)}, "head": {"b": jnp.full(1, 0.5)}}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["backbone"]["w"], -0.5)
  np.testing.assert_allclose(updates["head"]["b"], -5.0)
  base = optax.sgd(1.0)
  assert state_lib.scale_subtree(base, "head", 1.0) is base


def test_regression_then_scaled_bt_initialized_from_it(tmp_path):
  """The HelpSteer2-Preference recipe: Scaled BT starts from the regression model, whose
  ranking reward becomes the scalar head."""
  regression = reward.run(rm_regression.tiny(), str(tmp_path / "regression"))
  assert set(regression["eval"]["mse_per_attribute"]) == set(reward_lib.ATTRIBUTES)
  _check_run(regression, tmp_path / "regression", "attributes")
  cfg = rm_scaled_bt.tiny().unlock()
  cfg.init_from = regression["reward_model_dir"]
  scaled = reward.run(cfg.lock(), str(tmp_path / "scaled"))
  assert 0.0 <= scaled["eval"]["pairwise_accuracy"] <= 1.0
  _check_run(scaled, tmp_path / "scaled", "outcome")


def test_genarm_trains_from_user_files_and_a_pretrained_backbone(tmp_path):
  """data.source='files' reads jsonl like any user file; init_from loads an HF directory."""
  rows = [{"prompt": f"Q:{a}+{b}\n", "chosen": f"{a}+{b}={a + b}\nA:{a + b}\n",
           "rejected": f"{a}+{b}={a + b + 1}\nA:{a + b + 1}\n"} for a in range(4) for b in range(4)]
  rows.append({"prompt": "Q:1+1\n", "chosen": "1+1=2\n" * 40, "rejected": "1+1=3\n"})  # too long
  files = {}
  for split in ("train", "eval"):
    files[split] = tmp_path / f"{split}.jsonl"
    files[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
  TOK.save(str(tmp_path / "tok"))
  backbone = models.tiny_config(vocab_size=24, hidden_size=32, num_layers=1, intermediate_size=64)
  rewardlab.save_pretrained(str(tmp_path / "hf"), backbone,
                            models.init_params(backbone, jax.random.key(0)))
  cfg = rm_genarm.tiny().unlock()
  cfg.init_from = str(tmp_path / "hf")
  cfg.data.update(source="files", format="preference", train_files=str(files["train"]),
                  eval_files=str(files["eval"]), tokenizer=str(tmp_path / "tok"))
  results = reward.run(cfg.lock(), str(tmp_path / "run"))
  assert results["train_examples"] == 16 and "too_long=1" in results["data"]["train"]
  assert results["eval"]["num_pairs"] == 16
  config, _, _ = reward_lib.load_reward_model(results["reward_model_dir"])
  assert config.head == "genarm" and config.backbone.hidden_size == 32


def test_files_of_the_wrong_format_are_refused(tmp_path):
  cfg = rm_prm.tiny().unlock()
  cfg.data.update(source="files", format="preference", train_files="a.jsonl", eval_files="b.jsonl")
  with pytest.raises(ValueError, match="data.format='preference' cannot train kind 'prm'"):
    reward.run(cfg.lock(), str(tmp_path))


def test_trim_length_only_removes_padding():
  pair = PreferencePair("Q:1+2\n", "1+2=3\nA:3\n", "A:4\n")
  examples = [encode.encode_preference(TOK, pair, 64)]
  trimmed = reward.trim_length(examples)[0]
  assert trimmed["chosen_tokens"].shape == (24,)  # BOS + 6 + 10 + EOS = 18, rounded up to 8
  assert trimmed["chosen_score_index"] == examples[0]["chosen_score_index"] == 17
  np.testing.assert_array_equal(trimmed["chosen_tokens"], examples[0]["chosen_tokens"][:24])


BACKBONE = models.tiny_config(vocab_size=24, hidden_size=16, num_layers=1, intermediate_size=32)


@functools.lru_cache(maxsize=None)
def _backbone_params():
  return models.init_params(BACKBONE, jax.random.key(0))


def test_outcome_head_from_attributes_keeps_the_ranking_reward():
  attributes = reward_lib.RewardModelConfig(backbone=BACKBONE, head="attributes",
                                            attribute_weights=(0.5, 1.0, 0.0, 0.0, -1.0))
  params = reward_lib.init_reward_model(attributes, jax.random.key(0),
                                        backbone_params=_backbone_params())
  params["head"]["bias"] = jnp.arange(5.0)
  outcome = attributes.replace(head="outcome")
  moved = {"backbone": params["backbone"],
           "head": reward.outcome_head_from_attributes(params["head"],
                                                       attributes.attribute_weights)}
  tokens = jnp.asarray([[1, 5, 6, 7, 2]])
  mask, index = jnp.ones_like(tokens), jnp.asarray([4])
  ranking = reward_lib.jit_outcome_scores(attributes, params, tokens, mask, index)
  scalar = reward_lib.jit_outcome_scores(outcome, moved, tokens, mask, index)
  constant = float(jnp.arange(5.0) @ jnp.asarray(attributes.attribute_weights))  # c · w
  np.testing.assert_allclose(scalar + constant, ranking, rtol=1e-5)


def test_pair_outcomes_equal_scoring_each_side_alone():
  config = reward_lib.RewardModelConfig(backbone=BACKBONE)
  params = reward_lib.init_reward_model(config, jax.random.key(1),
                                        backbone_params=_backbone_params())
  pairs = [PreferencePair("Q:1+2\n", "1+2=3\nA:3\n", "1+2=4\nA:4\n"),
           PreferencePair("Q:9*2\n", "9*2=18\nA:18\n", "A:1\n")]
  batch = encode.stack_examples([encode.encode_preference(TOK, p, 24) for p in pairs])
  r_c, r_r, nll = jax.jit(functools.partial(reward.pair_outcomes, lm=True),
                          static_argnums=0)(config, params, batch)
  for side, got in (("chosen", r_c), ("rejected", r_r)):
    alone = reward_lib.jit_outcome_scores(config, params, batch[f"{side}_tokens"],
                                          batch[f"{side}_mask"], batch[f"{side}_score_index"])
    np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
  # The LM regularizer: mean NLL of the chosen responses' tokens (EOS included).
  logits = np.asarray(models.logits(BACKBONE, params["backbone"], batch["chosen_tokens"]))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  terms = [-logp[b, t - 1, batch["chosen_tokens"][b, t]] for b in range(2)
           for t in range(batch["chosen_prompt_length"][b], batch["chosen_score_index"][b] + 1)]
  np.testing.assert_allclose(nll, np.mean(terms), rtol=1e-5)


def test_good_prefix_mask_stops_at_the_first_wrong_step():
  batch = {"tokens": np.zeros((3, 10), np.int32), "mask": np.asarray([[1] * 9 + [0]] * 3),
           "step_positions": np.asarray([[3, 5, 8]] * 3),
           "step_labels": np.asarray([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]),
           "step_mask": np.asarray([[1, 1, 1], [1, 1, 1], [1, 1, 1]])}
  np.testing.assert_array_equal(reward.good_prefix_mask(batch), [
      [0, 1, 1, 1, 0, 0, 0, 0, 0, 0],   # step 0 good (ends at 3), step 1 wrong
      [0, 1, 1, 1, 1, 1, 1, 1, 1, 0],   # every step good
      [0] * 10])                        # the first step is wrong


# ----------------------------------------------------------------------------- reports


def test_pairwise_and_step_reports_by_hand():
  report = report_lib.pairwise_report([2.0, 0.0, 1.0], [1.0, 0.0, 3.0])
  assert report["pairwise_accuracy"] == pytest.approx(1 / 3)  # the tie counts as wrong
  assert report["ties"] == pytest.approx(1 / 3)
  assert report["mean_margin"] == pytest.approx(-1 / 3)
  assert report["calibration"]["n"] == 6  # both orders of every pair
  steps = report_lib.step_report([np.asarray([0.9, 0.2, 0.8]), np.asarray([0.9, 0.9])], [1, -1])
  assert steps["processbench_f1"] == 1.0
  # Judged steps: row 0 up to its first error (labels 1, 0), row 1 all (1, 1).
  assert steps["calibration"]["brier"] == pytest.approx((0.01 + 0.04 + 0.01 + 0.01) / 4)
  assert report_lib.first_error_label([1.0, 0.7, 0.2, 1.0]) == 2
  assert report_lib.first_error_label([1.0, 1.0]) == -1


def test_evaluate_files_scores_benchmark_rows(tmp_path):
  """RewardBench v1/v2 and ProcessBench rows go through the text scorers."""
  config = reward_lib.RewardModelConfig(backbone=BACKBONE)
  params = reward_lib.init_reward_model(config, jax.random.key(2),
                                        backbone_params=_backbone_params())
  v1 = [{"id": i, "prompt": "Q:1+2\n", "chosen": "1+2=3\nA:3\n", "rejected": f"A:{i}\n",
         "subset": subset} for i, subset in enumerate(["alpacaeval-easy", "mt-bench-hard",
                                                       "donotanswer", "math-prm"])]
  v2 = [{"id": "ref:0", "prompt": "Q:2*3\n", "chosen": ["2*3=6\nA:6\n"],
         "rejected": ["A:5\n", "A:7\n", "A:8\n"], "num_correct": 1, "subset": "Math"}]
  paths = {}
  for name, rows in (("v1", v1), ("v2", v2)):
    paths[name] = tmp_path / f"{name}.jsonl"
    paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
  report = report_lib.evaluate_files([str(paths["v1"])], "rewardbench", config, params, TOK)
  scores = reward_lib.OutcomeScorer(config, params, TOK).score(
      [r["prompt"] for r in v1] * 2, [r["chosen"] for r in v1] + [r["rejected"] for r in v1])
  expected = {r["subset"]: float(scores[i] > scores[4 + i]) for i, r in enumerate(v1)}
  assert report["subsets"] == expected and set(report["sections"]) == set(
      ["Chat", "Chat Hard", "Safety", "Reasoning"])
  report2 = report_lib.evaluate_files([str(paths["v2"])], "rewardbench2", config, params, TOK)
  assert report2["counts"] == {"Math": 1} and report2["num_pairs"] == 3
  out = report_lib.write_report(str(tmp_path / "out"), report2, name="v2")
  assert json.loads(open(out["json"]).read())["subsets"] == report2["subsets"]
  assert (tmp_path / "out" / "v2_reliability.png").stat().st_size > 0
  process = config.replace(head="process")
  with pytest.raises(ValueError, match="no sequence-level score for head 'process'"):
    report_lib.evaluate_files([str(paths["v1"])], "rewardbench", process, params, TOK)
  problems = arithmetic.generate_problems(4, seed=0)
  rows = rm_data.processbench_rows(problems, np.random.default_rng(0))
  path = rm_data.write_jsonl(str(tmp_path / "gsm8k.jsonl"), rows)  # the file names the split
  process_params = reward_lib.init_reward_model(process, jax.random.key(3),
                                                backbone_params=_backbone_params())
  pb = report_lib.evaluate_files([path], "processbench", process, process_params, TOK)
  assert list(pb["splits"]) == ["gsm8k"] and pb["num_solutions"] == 4
  assert pb["tokens_scored"] == sum(
      1 + len(r["problem"]) + sum(len(s) + 1 for s in r["steps"]) for r in rows)


def test_policy_samples_become_negatives_with_the_shipped_policy(tmp_path):
    # The SFT policy has 80 positions: its samples must fit them (prompt + completion).
    policy_dir = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                              "experiments", "assets", "sft_policy")
    cfg = rm_bt.tiny().unlock()
    cfg.data.policy_dir, cfg.data.policy_samples = policy_dir, 2
    cfg.data.num_train_problems, cfg.data.num_eval_problems = 8, 4
    cfg.data.num_ops = (4,)
    cfg.train.steps = 1
    reward._synthetic_files(cfg.lock(), reward.OBJECTIVES.get("bt"), str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "data" / "train.jsonl")]
    assert rows and all({"prompt", "chosen", "rejected"} <= set(r) for r in rows)


def test_lora_prm_run_resumes_and_saves_merged_weights(tmp_path):
  """The PRM path with LoRA (rank 2, bf16 base): interrupted and resumed through the
  checkpoints; the saved model holds merged float32 weights that differ from the base."""
  cfg = rm_prm.tiny().unlock()
  cfg.lora.rank, cfg.lora.alpha, cfg.lora.base_dtype = 2, 4.0, "bfloat16"
  cfg.lock()
  assert reward.run(cfg, str(tmp_path), stop_after=3) == {"stopped_at": 3}
  results = reward.run(cfg, str(tmp_path))
  assert results["steps"] == cfg.train.steps and results["lora_rank"] == 2
  assert 0.0 <= results["eval"]["processbench_f1"] <= 1.0
  # Adam holds two moments of the adapters and the head only
  assert results["optimizer_state_bytes"] <= 2 * results["trained_param_bytes"] + 64
  assert results["trained_param_bytes"] < 4 * models.tiny_config().num_params()
  config, params, _ = reward_lib.load_reward_model(results["reward_model_dir"])
  rm = reward_lib.RewardModelConfig(backbone=config.backbone, head="process")
  base = reward_lib.init_reward_model(rm, jax.random.key(cfg.seed))["backbone"]
  q = params["backbone"]["layers_0"]["self_attn"]["q_proj"]
  assert q.dtype == jnp.float32
  moved = np.abs(np.asarray(q) - np.asarray(base["layers_0"]["self_attn"]["q_proj"],
                                            jnp.bfloat16).astype(np.float32)).max()
  assert moved > 0
  _check_run(results, tmp_path, "process")

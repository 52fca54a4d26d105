"""The label_steps experiment at a tiny size: outputs, resumption and the summary."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from experiments.configs import label_steps as label_config
from experiments.configs import sft as sft_config
from rewardlab import models
from rewardlab.data import formats
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.search import completer as completer_lib
from rewardlab.search import mc_labels
from rewardlab.tasks import arithmetic
from rewardlab.train import interrupt, label_steps, sft

OUTPUTS = ("problems.jsonl", "labels_mc.jsonl", "labels_omegaprm.jsonl", "states_omegaprm.jsonl",
           "trees_omegaprm.jsonl")


def _scripted(cfg):
  return completer_lib.ScriptedCompleter(tuple(cfg.scripted_fail_probs))


def _requests_of(completer, problem):
  return sum(n for prefix, n in completer.calls.items() if prefix.startswith(problem.prompt))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  cfg = label_config.tiny()
  workdir = tmp_path_factory.mktemp("full")
  completer = _scripted(cfg)
  return cfg, workdir, completer, label_steps.run(cfg, str(workdir), completer=completer)


def test_interrupted_run_resumes_without_recomputing(full_run, tmp_path):
  cfg, full_dir, full_completer, full_summary = full_run
  problems = label_steps.label_problems(cfg)
  first, second = _scripted(cfg), _scripted(cfg)
  partial = label_steps.run(cfg, str(tmp_path), completer=first, stop_after=2)
  assert partial["stopped_at"] == 2
  # A crash while writing problem 3: its label rows exist, its problems.jsonl line does not.
  with open(tmp_path / "labels_mc.jsonl", "a") as f:
    f.write(json.dumps({"problem": problems[2].key, "prompt": "torn"}) + "\n" + '{"probl')
  with open(tmp_path / "problems.jsonl", "a") as f:
    f.write('{"problem": "' + problems[2].key)
  resumed = label_steps.run(cfg, str(tmp_path), completer=second)
  assert [_requests_of(first, p) > 0 for p in problems] == [True, True, False, False]
  assert [_requests_of(second, p) > 0 for p in problems] == [False, False, True, True]
  spent = sum(first.calls.values()) + sum(second.calls.values())
  assert spent == sum(full_completer.calls.values())
  # One problem per batch with a per-problem seed: the outputs equal the uninterrupted run's.
  for name in OUTPUTS:
    assert (tmp_path / name).read_text() == (full_dir / name).read_text(), name
  without_throughput = lambda s: {k: v for k, v in s.items() if k != "throughput"}
  assert without_throughput(resumed) == without_throughput(full_summary)
  again = label_steps.run(cfg, str(tmp_path), completer=_scripted(cfg))
  assert again["throughput"]["problems_this_run"] == 0


def test_label_files_are_stepwise_records_with_true_first_wrong_steps(full_run):
  cfg, workdir, _, _ = full_run
  problems = {p.key: p for p in label_steps.label_problems(cfg)}
  for method in cfg.methods:
    path = workdir / f"labels_{method}.jsonl"
    records, stats = formats.read_records(path, "stepwise")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert stats.kept == len(rows) == cfg.data.num_problems * cfg.num_solutions
    for record, row in zip(records, rows):
      problem = problems[row["problem"]]
      assert row["method"] == method and record.prompt == problem.prompt
      assert row["first_wrong_step"] == arithmetic.first_wrong_step(list(record.steps), problem)
  states, _ = formats.read_records(workdir / "states_omegaprm.jsonl", "stepwise")
  assert states and all(s.steps for s in states)


def test_summary_matches_the_label_files(full_run):
  cfg, workdir, _, summary = full_run
  rows = [json.loads(l) for l in (workdir / "labels_mc.jsonl").read_text().splitlines()]
  # MC spends N completions per distinct (problem, step prefix) that ends in a step line.
  prefixes = {(r["problem"], tuple(r["completions"][:k + 1])) for r in rows
              for k, s in enumerate(r["completions"]) if not s.startswith("A:")}
  mc = summary["methods"]["mc"]
  assert mc["completions"] == cfg.mc.num_completions * len(prefixes)
  implied = [mc_labels.implied_first_wrong_step(r["labels"]) for r in rows]
  agreement = np.mean([i == r["first_wrong_step"] for i, r in zip(implied, rows)])
  assert mc["quality_vs_compute"][str(cfg.mc.num_completions)]["agreement"] == agreement
  assert mc["labels"]["num_records"] == len(rows)
  labels = [y for r in rows for y in r["labels"]]
  assert mc["labels"]["mean_label"] == pytest.approx(np.mean(labels))
  omega = summary["methods"]["omegaprm"]
  trees = [json.loads(l) for l in (workdir / "trees_omegaprm.jsonl").read_text().splitlines()]
  assert omega["completions"] == sum(t["rollouts_spent"] for t in trees)
  assert all(t["rollouts_spent"] <= cfg.omegaprm.rollout_budget for t in trees)
  costs = [v["completions"] for _, v in sorted(omega["quality_vs_compute"].items(),
                                                key=lambda kv: int(kv[0]))]
  assert costs == sorted(costs) and costs[-1] == omega["completions"]
  assert summary["num_solutions"] == cfg.data.num_problems * cfg.num_solutions
  assert set(summary["omegaprm_vs_mc"]) >= {"saving_at_omegaprm_quality", "omegaprm_agreement"}
  assert json.loads((workdir / "summary.json").read_text())["num_problems"] == 4


def test_policy_completer_end_to_end(tmp_path):
  """The LM path: a tiny random policy saved like the SFT experiment does."""
  tok = CharTokenizer.for_arithmetic()
  mconfig = sft.model_config(sft_config.tiny(), tok)
  sft.save_policy(str(tmp_path / "policy"), mconfig, models.init_params(mconfig, jax.random.key(0)),
                  tok)
  cfg = label_config.tiny().unlock()
  cfg.completer, cfg.policy_dir = "policy", str(tmp_path / "policy")
  cfg.data.num_problems, cfg.task.num_ops, cfg.problems_per_batch = 2, (2,), 2
  cfg.num_solutions, cfg.mc.num_completions, cfg.mc.quality_levels = 2, 2, (1, 2)
  cfg.omegaprm.rollouts_per_state, cfg.omegaprm.rollout_budget = 2, 8
  cfg.omegaprm.quality_levels = (4,)
  cfg.sampling.max_new_tokens, cfg.sampling.batch_size = 16, 2
  summary = label_steps.run(cfg.lock(), str(tmp_path / "run"))
  assert summary["num_solutions"] == 4
  assert summary["throughput"]["completer"]["completions_per_s"] > 0


def test_bad_config_is_rejected(tmp_path):
  cfg = label_config.tiny().unlock()
  cfg.methods = ("mc", "prm800k")
  with pytest.raises(ValueError, match=r"config.methods: unknown \['prm800k'\]"):
    label_steps.run(cfg.lock(), str(tmp_path))
  cfg = label_config.tiny().unlock()
  cfg.completer, cfg.policy_dir = "policy", str(tmp_path / "missing")
  with pytest.raises(ValueError, match="is not a directory"):
    label_steps.run(cfg.lock(), str(tmp_path))
  cfg = label_config.tiny().unlock()
  cfg.task.name, cfg.task.train_files = "math", "tests/fixtures/gsm8k.jsonl"
  with pytest.raises(ValueError, match="scripted math completer needs the problems' per-step"):
    label_steps.run(cfg.lock(), str(tmp_path))  # GSM8K rows without intermediates


def test_problems_come_from_the_task_section():
  cfg = label_config.tiny()
  assert label_steps.label_problems(cfg) == arithmetic.generate_problems(
      4, seed=2000, num_ops=(3,), operand_max=99, split="train")




class _SignalDuring:
  """A completer that sends this process SIGTERM while it labels `problem`."""

  def __init__(self, inner, problem):
    self.inner, self.problem, self.sent = inner, problem, False

  def complete(self, prefixes, n, rng):
    if not self.sent and any(p.startswith(self.problem.prompt) for p in prefixes):
      self.sent = True
      os.kill(os.getpid(), signal.SIGTERM)
    return self.inner.complete(prefixes, n, rng)

  def __getattr__(self, name):
    return getattr(self.inner, name)


def test_sigterm_finishes_the_problem_keeps_it_and_exits_non_zero(full_run, tmp_path):
  cfg, full_dir, _, _ = full_run
  problems = label_steps.label_problems(cfg)
  with pytest.raises(interrupt.Interrupted, match="stopped with 2 of 4 problems labelled") as err:
    label_steps.run(cfg, str(tmp_path), completer=_SignalDuring(_scripted(cfg), problems[1]))
  assert err.value.code == 143
  assert label_steps.finished_problems(str(tmp_path)) == {p.key for p in problems[:2]}
  label_steps.run(cfg, str(tmp_path), completer=_scripted(cfg))
  for name in OUTPUTS:
    assert (tmp_path / name).read_text() == (full_dir / name).read_text(), name

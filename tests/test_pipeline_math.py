"""The pipeline on GSM8K-format problem files with a given Hugging Face policy.

The policy is a tiny random Llama with a byte-level BPE (no bos prepended, as GPT-2 and
SmolLM2 tokenizers) nudged towards the digits 1 and 2, so that some of its samples answer the
one-step problems below (answers 1 and 2) and rollouts give (right, wrong) pairs. The
held-out problems (problems without per-step results, then the first rows of the project's
GSM8K fixture) have no exact step labels, so the PRM is tested on the Monte-Carlo labels of
held-out labelled problems.
"""
import json
import os

import pytest
import torch

from experiments import pipeline
from experiments.configs import pipeline as pipeline_config
from rewardlab.data import tokenizers as tk
from rewardlab.search import completer as completer_lib
from rewardlab.tasks import MathProblem, MathTask, source

from bpe import save_bpe
from hf_models import make_model, save_model

pytestmark = pytest.mark.torch

GSM8K = os.path.join(os.path.dirname(__file__), "fixtures", "gsm8k.jsonl")
NAMES = ("Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi")


def _rows(split: str, intermediates: bool = True) -> list[dict]:
  rows = []
  for i, name in enumerate(NAMES):
    for a, b in ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0)):
      if (i + a) % 2 == (split == "train"):
        rows.append({"question": f"{name} has {a} apples and finds {b} more. How many apples "
                                 f"does {name} have?",
                     "answer": f"{name} has {a} + {b} = {a + b} apples.\n#### {a + b}"}
                    | ({"intermediates": [a + b]} if intermediates else {}))
  return rows


def _write(path, rows) -> str:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline_math")
  train = _write(root / "train.jsonl", _rows("train"))
  test = _write(root / "test.jsonl", _rows("test", intermediates=False)[:4])
  texts = [r["question"] + "\n" + r["answer"] for r in _rows("train") + _rows("test")]
  save_bpe(root / "policy", texts + [open(GSM8K).read()], adds_bos=False)
  tok = tk.load_tokenizer(root / "policy")
  model = make_model("llama", vocab_size=tok.vocab_size + 4, max_position_embeddings=1024)
  with torch.no_grad():  # a constant residual direction whose unembedding is 1, 2, \n, space
    model.model.embed_tokens.weight[:, 0] += 5.0
    for text, weight in (("1", 2.0), ("2", 2.0), ("\n", 1.6), (" ", 1.6), ("</s>", 1.2)):
      model.lm_head.weight[tok.token_to_id(text) if text == "</s>" else tok.encode(text)[0],
                           0] = weight
  save_model(model, root / "policy")
  return {"policy": str(root / "policy"), "train": train, "test": f"{test},{GSM8K}"}


def _math_cfg(files):
  c = pipeline_config.tiny().unlock()
  c.policy_dir = files["policy"]
  c.task.name, c.task.format, c.task.template = "math", "gsm8k", "{question}"
  c.task.train_files, c.task.eval_files = files["train"], files["test"]
  c.task.num_ops = source.config().num_ops  # unused by files; left at the default
  c.rollouts.max_new_tokens = 24
  c.rollouts.num_eval_problems = 6  # 4 of test.jsonl, the fixture's first 2 (no intermediates)
  # The methods that read the task's steps and the three reward models (test_tts checks
  # every method).
  c.tts.methods = ("majority", "best_of_n_orm", "best_of_n_prm", "beam_search", "genarm")
  return c.lock()


@pytest.mark.slow
def test_pipeline_on_problem_files_with_a_given_policy(files, tmp_path):
  cfg = _math_cfg(files)
  done = pipeline.run(cfg, str(tmp_path))
  assert list(done) == list(pipeline.STAGES)
  sft = done["sft"]
  assert sft["given"] and sft["policy_dir"] == files["policy"]
  assert not (tmp_path / "sft" / "policy").exists()  # not copied
  assert list(sft["sha256"]) == ["model.safetensors"]

  # Rollouts: the files' problems, prompts as the task source writes them, the task's checker.
  tok = tk.load_tokenizer(files["policy"])
  src = source.build(cfg.task, tok)
  roll = done["rollouts"]
  assert roll["train"]["problems"] == 16 and roll["eval"]["problems"] == 6
  rows = [json.loads(line) for line in open(tmp_path / "rollouts" / "rollouts_eval.jsonl")]
  problems = src.problems("test", 6, 0)
  assert [r["prompt"] for r in rows] == [src.prompt(p) for p in problems]
  assert problems[4].question.startswith("A baker")  # the fixture's first row
  for row, p in zip(rows, problems):
    assert row["correct"] == [MathTask("{question}").is_correct(t, p) for t in row["completions"]]
  assert roll["train"]["pairs"] > 0 and roll["eval"]["pairs"] > 0
  assert "error_kinds" not in roll["eval"]
  # No held-out exact step labels (no intermediates): the PRM is tested on the MC labels of
  # held-out labelled problems, disjoint from the ones it trains on.
  assert roll["eval"]["step_records"] == 0
  lab = done["labels"]
  train_rows = [json.loads(line) for line in open(lab["files"]["prm_train"])]
  eval_rows = [json.loads(line) for line in open(lab["files"]["prm_eval"])]
  assert train_rows and eval_rows and lab["prm_eval_problems"] == 1
  assert not {r["problem"] for r in train_rows} & {r["problem"] for r in eval_rows}
  assert done["rm_prm"]["eval_examples"] == len(eval_rows)

  for name in ("rm_orm", "rm_prm", "rm_genarm"):
    assert (tmp_path / name / "reward_model").is_dir()
  tts = json.loads((tmp_path / "tts" / "tts_results.json").read_text())
  assert set(tts["methods"]) == set(cfg.tts.methods) and tts["skipped"] == {}
  per = json.loads((tmp_path / "rl" / "pass1_per_problem.json").read_text())
  assert per["problems"] == [p.question for p in problems[:2]]
  assert (tmp_path / "rl" / "policy" / "model.safetensors").exists()
  md = (tmp_path / "report" / "report.md").read_text()
  assert "(given; no SFT stage)" in md and "gsm8k format" in md

  # Every stage records the task and the policy: another file or policy is refused.
  changed = cfg.unlock()
  changed.task.eval_files = files["test"].split(",")[0]
  with pytest.raises(pipeline.stages_lib.StageConfigError, match="rollouts"):
    pipeline.run(changed.lock(), str(tmp_path))


def test_exact_step_labels_of_file_problems_with_intermediates():
  problem = MathProblem("Mia has 1 apples and finds 1 more. How many?", "2", ("2",))
  view = completer_lib.step_view(problem, "\n", task=MathTask("{question}"), prompt="P")
  right = pipeline._math_step_labels(view, "1 + 1 = 2 apples.\n#### 2")
  assert right == {"prompt": "P", "completions": ["1 + 1 = 2 apples.", "#### 2"],
                   "labels": [1, 1], "problem": view.key, "first_wrong_step": -1,
                   "correct": True}
  wrong = pipeline._math_step_labels(view, "1 + 1 = 3 apples.\n#### 3")
  assert (wrong["labels"], wrong["first_wrong_step"], wrong["correct"]) == ([0, 0], 0, False)
  unknown = completer_lib.step_view(MathProblem(problem.question, "2"), "\n",
                                    task=MathTask("{question}"), prompt="P")
  assert pipeline._math_step_labels(unknown, "1 + 1 = 2\n#### 2") is None  # no intermediates


def test_settings_that_cannot_run_are_refused_before_any_stage(files):
  cfg = _math_cfg(files).unlock()
  cfg.policy_dir = ""
  with pytest.raises(ValueError, match="needs --config.policy_dir"):
    pipeline.build_stages(cfg.lock(), "unused")
  cfg = _math_cfg(files).unlock()
  cfg.sft.from_scratch = True
  with pytest.raises(ValueError, match="from_scratch"):
    pipeline.build_stages(cfg.lock(), "unused")
  cfg = _math_cfg(files).unlock()
  cfg.policy_dir = files["policy"] + "-missing"
  with pytest.raises(ValueError, match="not a directory"):
    pipeline.build_stages(cfg.lock(), "unused")


def test_the_default_synthetic_run_records_what_it_always_did():
  cfg = pipeline_config.get_config()
  assert pipeline._source_config(cfg) == {}
  stages = pipeline.build_stages(cfg, "unused")
  by_name = {s.name: s for s in stages}
  assert dict(by_name["rollouts"].config) == dict(cfg.rollouts)
  assert dict(by_name["rl"].config) == dict(cfg.rl)
  assert "task" not in by_name["labels"].config and "policy_dir" not in by_name["tts"].config

"""Step labels on math problem files: GSM8K-format word problems with their per-step
results, a scripted completer with known slip probabilities, and a tiny random Hugging Face
policy prompted through its chat template (whose text starts with the BOS token)."""

import json

import numpy as np
import pytest

from experiments.configs import label_steps as label_config
from rewardlab.data import tokenizers as tk
from rewardlab.search import completer as completer_lib
from rewardlab.search import mc_labels, omegaprm
from rewardlab.tasks import MathTask, math_answers, problem_files, word_problems
from rewardlab.train import label_steps

# A SmolLM2-like template: every turn opens with the BOS token "<s>".
BOS_CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n"
                     "{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def _write_word_problems(path, num, seed=0):
  word_problems.write_jsonl(str(path), word_problems.generate(num, seed=seed, split="train",
                                                              difficulty="medium"))
  return str(path)


def _math_config(files, **changes):
  cfg = label_config.tiny().unlock()
  cfg.task.update(dict(name="math", format="gsm8k", train_files=files))
  for key, value in changes.items():
    cfg[key] = value
  return cfg


def _scripted_first_wrong(steps, intermediates):
  """Where the scripted completer slipped, read from its own lines: -1 if nowhere."""
  for j, step in enumerate(steps):
    claims = math_answers.equation_results(step)
    expected = intermediates[j] if j < len(intermediates) else None
    if "####" in step:
      return -1 if math_answers.extract_last_number(step) == intermediates[-1] else j
    if claims != [expected]:
      return j
  return len(steps)


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("math_labels")
  files = _write_word_problems(root / "train.jsonl", 6)
  cfg = _math_config(files)
  cfg.data.num_problems = 0  # all rows of the file
  summary = label_steps.run(cfg.lock(), str(root / "run"))
  return cfg, root, files, summary


def test_scripted_math_labels_find_the_exact_first_wrong_step(scripted_run):
  cfg, root, files, summary = scripted_run
  problems, _ = problem_files.read_problems(files, "gsm8k")
  by_prompt = {MathTask().prompt(p): p for p in problems}
  assert summary["num_problems"] == 6 and summary["num_solutions"] == 6 * cfg.num_solutions
  assert "num_solutions_without_truth" not in summary
  wrong = 0
  for method in cfg.methods:
    records = [json.loads(l) for l in (root / "run" / f"labels_{method}.jsonl").open()]
    assert len(records) == 6 * cfg.num_solutions
    for r in records:
      problem = by_prompt[r["prompt"]]  # plain prompts: no tokenizer, MathTask's template
      steps = r["completions"]
      assert steps[-1].startswith("#### ") and len(steps) == len(problem.intermediates) + 1
      truth = _scripted_first_wrong(steps, problem.intermediates)
      assert r["first_wrong_step"] == truth  # MathTask.first_wrong_step, checked independently
      assert r["correct"] == (truth == -1)
      # A wrong step is never undone: no prefix from it on has a right completion (MC
      # measures every prefix; OmegaPRM infers some, totals 0).
      if truth >= 0:
        assert all(s == 0 for s, _ in r["counts"][truth:]), r
        if method == "mc":
          assert all(y == 0.0 for y in r["labels"][truth:]) and r["counts"][truth][1] > 0
      wrong += truth >= 0
  assert 0 < wrong < len(cfg.methods) * 6 * cfg.num_solutions  # both kinds of solutions
  for method in cfg.methods:
    full = summary["methods"][method]["quality_vs_compute"]
    top = full[max(full, key=int)]
    assert top["agreement"] >= 0.75, (method, top)
  assert summary["omegaprm_vs_mc"]["omegaprm_agreement"] >= 0.75


def test_math_run_resumes_by_problem_names(scripted_run, tmp_path):
  cfg, root, _, summary = scripted_run
  again = label_steps.run(cfg.lock(), str(root / "run"))
  assert again["throughput"]["problems_this_run"] == 0
  assert {k: v for k, v in again.items() if k != "throughput"} == \
      {k: v for k, v in summary.items() if k != "throughput"}


def test_math_files_without_intermediates_have_no_true_step(tmp_path):
  rows = [json.loads(l) for l in open(_write_word_problems(tmp_path / "wp.jsonl", 2))]
  with open(tmp_path / "plain.jsonl", "w") as f:
    f.writelines(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n"
                 for r in rows)
  cfg = _math_config(str(tmp_path / "plain.jsonl"))
  cfg.data.num_problems = 0
  problems, _ = problem_files.read_problems(str(tmp_path / "wp.jsonl"), "gsm8k")
  src_views = completer_lib.step_views(problems, "\n", MathTask())
  # The scripted completer knows the results; the files the labeller reads do not.
  scripted = completer_lib.ScriptedMathCompleter(src_views, (0.2,))
  summary = label_steps.run(cfg.lock(), str(tmp_path / "run"), completer=scripted)
  assert summary["num_solutions_without_truth"] == summary["num_solutions"] == 8
  assert np.isnan(summary["fraction_with_wrong_step"])
  records = [json.loads(l) for l in (tmp_path / "run" / "labels_mc.jsonl").open()]
  assert records and all(r["first_wrong_step"] is None for r in records)


@pytest.mark.parametrize("separator", ["\n", "\n\n"])
def test_mc_soft_labels_match_the_closed_form_on_math_problems(separator):
  problem = problem_files.parse_gsm8k(word_problems.generate(1, seed=3, split="train")[0].to_row())
  task = MathTask(step_separator=separator)
  view = completer_lib.step_view(problem, separator, task=task, prompt="Q? ")
  fail = (0.3, 0.2, 0.1)
  scripted = completer_lib.ScriptedMathCompleter([view], fail)
  right = [f"Result {j + 1} = {v}" for j, v in enumerate(problem.intermediates)]
  slipped = right[:1] + [f"Result {j + 1} = {int(v) + 1000}"  # wrong from step 1 on
                         for j, v in enumerate(problem.intermediates) if j >= 1]
  solutions = [right + [f"#### {problem.answer}"],
               slipped + [f"#### {int(problem.answer) + 1000}"]]
  n = 400
  (labels,) = mc_labels.label_solutions([problem], [solutions], scripted, num_completions=n,
                                        rng=np.random.default_rng(0), separator=separator,
                                        task=task, prompts=["Q? "])
  for item, steps in zip(labels, solutions):
    assert item.prompt == "Q? " and list(item.steps) == steps
    for k in range(len(steps) - 1):
      p = scripted.success_probability(view, steps[:k + 1])
      assert abs(item.labels[k] - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9, (k, item.labels, p)
  assert labels[0].labels[-1] == 1.0 and labels[1].labels[1:] == (0.0,) * (len(solutions[1]) - 1)
  assert mc_labels.implied_first_wrong_step(labels[1].labels) == 1 == \
      task.first_wrong_step(view.solution(solutions[1]), problem)
  # Every prefix was sampled once per distinct prefix (the first step is shared).
  assert sum(scripted.calls.values()) == len(set(
      view.prefix(s[:k + 1]) for s in solutions for k in range(len(s) - 1)))


def test_omegaprm_binary_search_finds_a_math_rollouts_first_wrong_step():
  problem = problem_files.parse_gsm8k(
      word_problems.generate(1, seed=4, split="train", difficulty="hard")[0].to_row())
  task = MathTask()
  view = completer_lib.step_view(problem, "\n", task=task)
  scripted = completer_lib.ScriptedMathCompleter([view], (0.3,))
  config = omegaprm.OmegaPRMConfig(rollouts_per_state=8, max_searches=6, rollout_budget=400)
  (tree,) = omegaprm.run_search([problem], scripted, config, rng=np.random.default_rng(1),
                                task=task)
  assert tree.searches and tree.to_json()["problem"] == view.key
  for search in tree.searches:
    node = tree.to_json()["nodes"][search.state]
    rollout = node["rollouts"][search.rollout]
    steps = view.steps(view.solution(node["steps"]) + rollout["text"])
    assert search.first_wrong == task.first_wrong_step(view.solution(steps), problem)
    assert not rollout["correct"]


# ----------------------------------------------------------------------------- HF policy


@pytest.fixture(scope="module")
def hf_policy(tmp_path_factory):
  """A tiny random Llama with a BPE tokenizer trained on word problems, whose chat
  template opens every turn with its BOS token (as SmolLM2's <|im_start|> does)."""
  from hf_models import make_model, save_model
  from test_tokenizers import _save_bpe

  root = tmp_path_factory.mktemp("hf_math")
  texts = [f"{w.question}\n{w.answer}" for w in word_problems.generate(200, seed=9,
                                                                        split="train")]
  tokenizer = _save_bpe(root / "model", chat_template=BOS_CHAT_TEMPLATE, texts=texts)
  save_model(make_model("llama", vocab_size=len(tokenizer)), root / "model")
  return root / "model", tokenizer


def test_prompts_with_a_bos_opening_chat_template_get_one_bos(hf_policy, monkeypatch):
  import jax
  from rewardlab import load_pretrained
  from rewardlab.models import init_params
  from experiments.configs import sft as sft_config
  from rewardlab.train import sft

  model_dir, hf = hf_policy
  tok = tk.load_tokenizer(model_dir)
  messages = [{"role": "user", "content": "Mia has 3 apples. How many apples?"}]
  chat = tok.chat_prompt(messages)
  assert chat.startswith("<s>user\n")
  reference = list(hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                          return_dict=True)["input_ids"])
  assert reference.count(tok.bos_id) == 2 and reference[0] == tok.bos_id  # two turn openers
  steps = "3 + 4 = 7\n"
  want = reference + hf.encode(steps, add_special_tokens=False)
  seen = []
  real = completer_lib.generate
  monkeypatch.setattr(completer_lib, "generate",
                      lambda config, params, prompts, **kw: seen.append(prompts) or
                      real(config, params, prompts, **kw))
  config, params = load_pretrained(str(model_dir))
  lm = completer_lib.LMCompleter(config, params, tok, max_new_tokens=2, batch_size=1)
  lm.complete([chat + steps], 1, np.random.default_rng(0))
  assert seen[0][0] == want  # not [bos, bos, ...]
  assert sft.prompt_ids(tok, type("P", (), {"prompt": chat})) == reference
  # The char tokenizer keeps [bos] + characters.
  char = tk.CharTokenizer.for_arithmetic()
  cconfig = sft.model_config(sft_config.tiny(), char)
  seen.clear()
  completer_lib.LMCompleter(cconfig, init_params(cconfig, jax.random.key(0)), char,
                            max_new_tokens=2, batch_size=1).complete(
      ["Q:1+2\n"], 1, np.random.default_rng(0))
  assert seen[0][0] == [char.bos_id] + char.encode("Q:1+2\n")
  assert sft.prompt_ids(char, type("P", (), {"prompt": "Q:1+2\n"})) == seen[0][0]


@pytest.mark.slow
def test_label_steps_with_a_local_hf_policy_and_its_chat_template(hf_policy, tmp_path):
  model_dir, _ = hf_policy
  rows = [{"question": "Mia has 3 apples and buys 4 more. Then she has 2 times as many.",
           "answer": "3 + 4 = 7\n7 * 2 = 14\n#### 14", "intermediates": [7, 14]},
          {"question": "Ravi has 5 coins and loses 2.", "answer": "5 - 2 = 3\n#### 3",
           "intermediates": [3]}]  # short: the random model has 128 positions
  files = str(tmp_path / "train.jsonl")
  with open(files, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  cfg = _math_config(files, completer="policy", policy_dir=str(model_dir), num_solutions=2,
                     problems_per_batch=2)
  cfg.task.template = "{question}"
  cfg.data.num_problems = 2
  cfg.mc.num_completions, cfg.mc.quality_levels = 2, (1, 2)
  cfg.omegaprm.rollouts_per_state, cfg.omegaprm.rollout_budget = 2, 8
  cfg.omegaprm.quality_levels = (4,)
  cfg.sampling.max_new_tokens, cfg.sampling.batch_size = 8, 4
  summary = label_steps.run(cfg.lock(), str(tmp_path / "run"))
  assert summary["num_problems"] == 2 and summary["num_solutions"] == 4
  assert summary["throughput"]["completer"]["completions_per_s"] > 0
  problems = [json.loads(l) for l in (tmp_path / "run" / "problems.jsonl").open()]
  assert [p["num_ops"] for p in problems] == [
      len(json.loads(l)["intermediates"]) for l in open(files)]
  assert all(t is None or -1 <= t for p in problems for t in p["first_wrong_step"])
  for method in cfg.methods:
    for r in map(json.loads, (tmp_path / "run" / f"labels_{method}.jsonl").open()):
      assert r["prompt"].startswith("<s>user\n") and r["prompt"].endswith("<s>assistant\n")
      assert isinstance(r["first_wrong_step"], int)

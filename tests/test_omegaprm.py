"""OmegaPRM: binary search, Q + U selection, caching and no re-selection."""

import json
import math

import numpy as np
import pytest

from rewardlab.data import formats
from rewardlab.search import completer as completer_lib
from rewardlab.search import mc_labels, omegaprm
from rewardlab.search.completer import prefix_text, solution_steps
from rewardlab.tasks import arithmetic


class QuarterCompleter(completer_lib.ScriptedCompleter):
  """Deterministic: from a right prefix of k steps, completion j of n is right when
  j mod 4 = 3 and otherwise slips at step k + j mod (K - k), so MC = 1/4 exactly on
  right prefixes (n a multiple of 4) and 0 on wrong ones."""

  def __init__(self):
    super().__init__((0.0,))

  def complete(self, prefixes, n, rng):
    out = []
    for prefix in prefixes:
      self.calls[prefix] = self.calls.get(prefix, 0) + 1
      problem = arithmetic.parse_prompt(prefix.split("\n", 1)[0])
      steps = arithmetic.parse_solution(prefix).steps
      texts = []
      for j in range(n):
        slip = None if j % 4 == 3 or len(steps) >= problem.num_ops else \
            len(steps) + j % (problem.num_ops - len(steps))
        texts.append(_write(problem, steps, slip))
      out.append(texts)
    return out


def _write(problem, steps, slip):
  """Continue ``steps`` consistently, adding 1 to the result of step ``slip``."""
  value = int(steps[-1].rsplit("=", 1)[1]) if steps else problem.start
  lines = []
  for j in range(len(steps), problem.num_ops):
    op, b = problem.ops[j]
    result = {"+": value + b, "-": value - b, "*": value * b}[op] + (j == slip)
    lines.append(f"{value}{op}{b}={result}")
    value = result
  return "".join(l + "\n" for l in lines) + f"A:{value}\n"


def _full_steps(tree, search):
  node = tree._by_id[search.state]  # pylint: disable=protected-access
  rollout = node.rollouts[search.rollout]
  return solution_steps(prefix_text(tree.problem, node.steps) + rollout.text)


def _check_searches(trees):
  hits = total = 0
  for tree in trees:
    for search in tree.searches:
      if search.first_wrong is None:
        continue
      total += 1
      hits += search.first_wrong == arithmetic.first_wrong_step(_full_steps(tree, search),
                                                                tree.problem)
  return hits, total


def test_binary_search_finds_the_first_wrong_step_deterministic_completer():
  problems = arithmetic.generate_problems(12, seed=5, num_ops=(4,))
  config = omegaprm.OmegaPRMConfig(rollouts_per_state=4, max_searches=10, rollout_budget=400)
  trees = omegaprm.run_search(problems, QuarterCompleter(), config,
                              rng=np.random.default_rng(0))
  hits, total = _check_searches(trees)
  assert total >= 60 and hits == total


def test_binary_search_finds_the_first_wrong_step_sampling_completer():
  problems = arithmetic.generate_problems(30, seed=6, num_ops=(3, 4))
  # Right prefixes succeed with probability 0.24-0.7, so most MC values are below 1/2.
  completer = completer_lib.ScriptedCompleter((0.3, 0.3, 0.3, 0.3))
  config = omegaprm.OmegaPRMConfig(rollouts_per_state=16, max_searches=10, rollout_budget=800)
  trees = omegaprm.run_search(problems, completer, config, rng=np.random.default_rng(1))
  hits, total = _check_searches(trees)
  assert total >= 100 and hits >= 0.95 * total


def test_probes_follow_the_bisection_and_labels_are_inferred_along_the_path():
  problem = arithmetic.Problem(3, (("+", 4), ("*", 2), ("-", 5), ("+", 1)))   # 7, 14, 9, 10
  right = "3+4=7\n7*2=14\n14-5=9\n9+1=10\nA:10\n"
  wrong = "3+4=7\n7*2=14\n14-5=8\n8+1=9\nA:9\n"                              # wrong at step 2
  completer = completer_lib.ScriptedCompleter((0.0,))
  config = omegaprm.OmegaPRMConfig(rollouts_per_state=2, max_searches=5, rollout_budget=20)
  (tree,) = omegaprm.run_search([problem], completer, config, rng=np.random.default_rng(0),
                                root_rollouts=[[right, wrong]])
  # l, h = 1, 5: mid 3 (MC 0, go left), mid 2 (MC 1, go right): first wrong = 0 + 3 - 1.
  assert list(completer.calls) == [problem.prompt + "3+4=7\n7*2=14\n14-5=8\n",
                                   problem.prompt + "3+4=7\n7*2=14\n"]
  assert [(s.state, s.rollout, s.first_wrong) for s in tree.searches] == [(0, 1, 2)]
  assert tree.rollouts_spent == 4 and tree.pool == set()   # children have MC 0 or 1
  labels = tree.labels_for(solution_steps(wrong))
  assert labels.labels == (1.0, 1.0, 0.0, 0.0, 0.0)
  assert labels.totals == (0, 2, 2, 0, 1)
  assert mc_labels.implied_first_wrong_step(labels.labels) == 2
  assert tree.labels_for(solution_steps(right)).labels == (1.0,) * 5
  # Truncated to the root only, nothing but the answers is known.
  view = tree.truncated(0)
  assert view.rollouts_spent == 0 and len(view.nodes) == 1
  assert view.labels_for(solution_steps(wrong)).labels == (0.5, 0.5, 0.5, 0.5, 0.0)
  assert tree.truncated(3).rollouts_spent == 2


def test_selection_is_argmax_q_plus_u_and_never_repeats():
  problem = arithmetic.Problem(3, (("+", 4), ("*", 2)))
  tree = omegaprm.SearchTree(problem, omegaprm.OmegaPRMConfig())
  short, long = "3+4=8\n8*2=16\nA:16\n", "3+4=7\n7*2=15\nA:15\n\n\n\n\n\n"
  tree.add_state((), ["3+4=7\n7*2=14\nA:14\n", long, short, "3+4=7\n7*2=14\nA:14\n"], cost=0)
  assert tree.pool == {(0, 1), (0, 2)}
  q = lambda text: 0.5 ** (1 - 0.5) * 0.9 ** (len(text) / 500)
  assert tree.score(0, 2, 0) == pytest.approx(q(short))
  assert tree.select() == (0, 2)                            # the shorter rollout first
  assert tree._by_id[0].visits == 1                        # pylint: disable=protected-access
  assert tree.score(0, 1, 1) == pytest.approx(q(long) + 0.125 * math.sqrt(1) / 2)
  assert tree.select() == (0, 1) and tree.pool == set()
  tree.pool.add((0, 2))                                     # an anchor bug would re-add it
  with pytest.raises(AssertionError, match="selected twice"):
    tree.select()


def test_mc_values_are_cached_and_budgets_hold():
  problems = arithmetic.generate_problems(15, seed=7, num_ops=(3, 4))
  completer = completer_lib.ScriptedCompleter((0.2, 0.2, 0.2, 0.2))
  metered = completer_lib.MeteredCompleter(completer)
  config = omegaprm.OmegaPRMConfig(rollouts_per_state=4, max_searches=6, rollout_budget=40)
  trees = omegaprm.run_search(problems, metered, config, rng=np.random.default_rng(2))
  assert max(completer.calls.values()) == 1                 # every prefix sampled once
  assert metered.stats.completions == sum(t.rollouts_spent for t in trees)
  assert sum(t.cache_hits for t in trees) > 0               # shared prefixes were reused
  for tree in trees:
    evaluated = [n for n in tree.nodes.values() if n.cost]
    assert tree.rollouts_spent == 4 * len(evaluated) <= config.rollout_budget
    assert len(tree.searches) <= config.max_searches
    pairs = [(s.state, s.rollout) for s in tree.searches]
    assert len(set(pairs)) == len(pairs) == len(tree.selected)
    assert not tree.pool & tree.selected


def test_tree_json_and_state_records(tmp_path):
  problems = arithmetic.generate_problems(4, seed=8, num_ops=(4,))
  config = omegaprm.OmegaPRMConfig(rollouts_per_state=4, max_searches=4, rollout_budget=48)
  trees = omegaprm.run_search(problems, QuarterCompleter(), config,
                              rng=np.random.default_rng(3))
  tree = json.loads(json.dumps(trees[0].to_json()))
  nodes = {n["id"]: n for n in tree["nodes"]}
  assert nodes[0]["parent"] is None and nodes[0]["steps"] == [] and nodes[0]["mc"] == 0.25
  for node in tree["nodes"][1:]:
    parent = nodes[node["parent"]]
    assert node["steps"][:len(parent["steps"])] == parent["steps"]
    assert len(parent["steps"]) < len(node["steps"])
  rows = [s.to_record(problem=t.problem.key) for t in trees for s in t.state_labels()]
  path = tmp_path / "states.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  records, stats = formats.read_records(path, "stepwise")
  assert stats.kept == len(rows) == sum(len(t.nodes) - 1 for t in trees)
  # The last step of each state record is that state's measured MC.
  for record, row in zip(records, rows):
    assert row["counts"][-1][1] == 4 and record.labels[-1] == row["counts"][-1][0] / 4


def test_config_is_validated():
  with pytest.raises(ValueError, match="rollout_budget 4 must allow one evaluation"):
    omegaprm.OmegaPRMConfig(rollouts_per_state=8, rollout_budget=4)
  with pytest.raises(ValueError, match="alpha and beta"):
    omegaprm.OmegaPRMConfig(alpha=0.0)

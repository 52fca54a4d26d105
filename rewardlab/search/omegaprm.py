"""OmegaPRM: Monte-Carlo tree search with binary search for the first wrong step.

Luo et al. 2024, "Improve Mathematical Reasoning in Language Models by Automated
Process Supervision". A *state* ``s`` is the prompt plus a prefix of steps. Its
Monte-Carlo value is ``MC(s) = c / k`` over ``k`` rollouts (completions) from ``s``.

* Every incorrect rollout ``r`` of a state with ``0 < MC(s) < 1`` joins the pool of
  candidates. The next ``(s, r)`` is ``argmax Q(s, r) + U(s)`` with
  ``Q(s, r) = α^{1 - MC(s)} · β^{len(r) / L}`` and
  ``U(s) = c_puct · sqrt(Σ_s' N(s')) / (1 + N(s))``; ``N(s)`` counts selections of s.
  ``len(r)`` is in characters (= tokens of the character tokenizer).
* Binary search on the selected rollout's steps ``r_1..r_m``: the first error is
  the smallest ``i`` in ``[1, m + 1]`` with ``MC(s + r_1..r_i) = 0`` (``i = m + 1`` is
  the wrong answer itself). With ``l, h = 1, m + 1``: ``mid = ⌊(l + h) / 2⌋``; if
  ``MC(s + r_1..r_mid) = 0`` go left (``h = mid``), else go right from that new
  state (``l = mid + 1``). Every evaluated state joins the tree, and its own
  incorrect rollouts join the pool.
* Every MC value is computed once: the tree is keyed by the step prefix, so a
  prefix reached again (another rollout with the same first steps, another
  search) is read from the tree. A selected ``(s, r)`` leaves the pool and can
  never be selected again (asserted).
* The search ends after ``max_searches`` selections, when the pool is empty, or
  when the next MC evaluation would exceed ``rollout_budget`` completions.

Any task with ``is_answer_step`` can be searched (default: the arithmetic task); the
prompt text, the step split and the outcome of a rollout come from the problem's
:class:`~rewardlab.search.completer.StepView`.

Outputs: the tree as JSON (:meth:`SearchTree.to_json`) and :class:`StepLabels`
for any step sequence along it (:meth:`SearchTree.labels_for`): measured MC values
where the tree has the prefix, inferred ones elsewhere (``totals = 0``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Sequence

from rewardlab.search import completer as completer_lib
from rewardlab.search.completer import Completer, StepView, Task, step_view, step_views
from rewardlab.search.mc_labels import StepLabels
from rewardlab.tasks import arithmetic

Steps = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OmegaPRMConfig:
  """Search hyper-parameters (paper defaults; the paper used k = 8)."""

  c_puct: float = 0.125
  alpha: float = 0.5
  beta: float = 0.9
  length_scale: float = 500.0      # L
  rollouts_per_state: int = 16     # k
  max_searches: int = 20
  rollout_budget: int = 200        # completions this search may request, per problem

  def __post_init__(self):
    if self.rollouts_per_state <= 0:
      raise ValueError(f"rollouts_per_state must be positive, got {self.rollouts_per_state}")
    if self.rollout_budget < self.rollouts_per_state:
      raise ValueError(f"rollout_budget {self.rollout_budget} must allow one evaluation "
                       f"(rollouts_per_state {self.rollouts_per_state})")
    if self.max_searches < 0 or self.c_puct < 0 or self.length_scale <= 0:
      raise ValueError("need max_searches >= 0, c_puct >= 0 and length_scale > 0")
    if not (0.0 < self.alpha <= 1.0 and 0.0 < self.beta <= 1.0):
      raise ValueError(f"alpha and beta must be in (0, 1], got {self.alpha}, {self.beta}")


@dataclasses.dataclass(frozen=True)
class Rollout:
  text: str            # the completion as sampled
  steps: Steps         # its step lines (the answer line excluded)
  correct: bool


@dataclasses.dataclass
class Node:
  """One evaluated state: its prefix steps, rollouts and selection count N(s)."""

  id: int
  steps: Steps
  rollouts: list[Rollout]
  cost: int            # completions requested to evaluate it (0 for given root rollouts)
  visits: int = 0

  @property
  def successes(self) -> int:
    return sum(r.correct for r in self.rollouts)

  @property
  def mc(self) -> float:
    return self.successes / len(self.rollouts)

  @property
  def outcomes(self) -> str:
    return "".join("1" if r.correct else "0" for r in self.rollouts)


@dataclasses.dataclass(frozen=True)
class Search:
  """One selection: the state and rollout searched, and the first wrong step found.

  ``first_wrong`` indexes the full step list ``state.steps + rollout steps + [answer]``
  (as :func:`arithmetic.first_wrong_step` does); None when the budget ran out mid-search.
  """

  state: int
  rollout: int
  first_wrong: int | None


class SearchTree:
  """The search state of one problem; driven by :func:`search_task`."""

  def __init__(self, problem, config: OmegaPRMConfig,
               separator: str = arithmetic.STEP_SEPARATOR, *, task=None,
               prompt: str | None = None):
    self.view: StepView = step_view(problem, separator, task=task, prompt=prompt)
    self.problem, self.config, self.separator = problem, config, separator
    self.nodes: dict[Steps, Node] = {}
    self.pool: set[tuple[int, int]] = set()
    self.selected: set[tuple[int, int]] = set()
    self.searches: list[Search] = []
    self.rollouts_spent = 0   # completions requested from the completer
    self.cache_hits = 0       # MC values read from the tree instead of sampled again
    self._by_id: list[Node] = []

  # -------------------------------------------------------------------------- tree growth

  def add_state(self, steps: Steps, completions: Sequence[str], cost: int) -> Node:
    """Add an evaluated state; its incorrect rollouts join the pool when 0 < MC < 1."""
    if steps in self.nodes:
      raise AssertionError(f"state {steps} evaluated twice")
    if not completions:
      raise ValueError(f"problem {self.view.key}: state {steps} got no rollouts")
    view, solution = self.view, self.view.solution(steps)
    rollouts = []
    for text in completions:
      full = view.steps(solution + text)
      lines = tuple(s for s in full[len(steps):] if not view.is_answer_step(s))
      rollouts.append(Rollout(text, lines, view.is_correct(solution + text)))
    node = Node(len(self._by_id), steps, rollouts, cost)
    self.nodes[steps] = node
    self._by_id.append(node)
    if 0.0 < node.mc < 1.0:
      self.pool.update((node.id, i) for i, r in enumerate(rollouts) if not r.correct)
    return node

  def evaluate(self, steps: Steps) -> Generator[list[str], list[list[str]], Node | None]:
    """MC of a state: from the tree if known, else k fresh rollouts (None: over budget)."""
    if steps in self.nodes:
      self.cache_hits += 1
      return self.nodes[steps]
    k = self.config.rollouts_per_state
    if self.rollouts_spent + k > self.config.rollout_budget:
      return None
    (completions,) = yield [self.view.prefix(steps)]
    if len(completions) != k:
      raise ValueError(f"completer returned {len(completions)} rollouts, expected {k}")
    self.rollouts_spent += k
    return self.add_state(steps, completions, cost=k)

  # -------------------------------------------------------------------------- selection

  def score(self, state: int, rollout: int, total_visits: int) -> float:
    """``Q(s, r) + U(s)``."""
    c, node = self.config, self._by_id[state]
    q = c.alpha ** (1.0 - node.mc) * c.beta ** (len(node.rollouts[rollout].text) / c.length_scale)
    u = c.c_puct * math.sqrt(total_visits) / (1 + node.visits)
    return q + u

  def select(self) -> tuple[int, int]:
    """Take the best ``(state, rollout)`` out of the pool (ties: lowest ids)."""
    total_visits = sum(n.visits for n in self._by_id)
    best = max(sorted(self.pool), key=lambda pair: self.score(*pair, total_visits))
    if best in self.selected:
      raise AssertionError(f"(state, rollout) {best} selected twice")
    self.pool.remove(best)
    self.selected.add(best)
    self._by_id[best[0]].visits += 1
    return best

  def binary_search(self, state: int, rollout: int) -> Generator[list[str], list[list[str]], bool]:
    """Locate the first wrong step of an incorrect rollout; False if the budget ran out."""
    node = self._by_id[state]
    lines = node.rollouts[rollout].steps
    lo, hi = 1, len(lines) + 1
    while lo < hi:
      mid = (lo + hi) // 2
      child = yield from self.evaluate(node.steps + lines[:mid])
      if child is None:
        self.searches.append(Search(state, rollout, None))
        return False
      if child.mc == 0.0:
        hi = mid
      else:
        lo = mid + 1
    self.searches.append(Search(state, rollout, len(node.steps) + lo - 1))
    return True

  # -------------------------------------------------------------------------- outputs

  def known_outcomes(self, steps: Steps) -> str | None:
    """Rollout outcomes of a prefix when known: measured, or exact for an answer line."""
    if steps in self.nodes:
      return self.nodes[steps].outcomes
    if steps and self.view.is_answer_step(steps[-1]):
      return "1" if self.view.is_correct(self.view.solution(steps)) else "0"
    return None

  def labels_for(self, steps: Sequence[str], method: str = "omegaprm") -> StepLabels:
    """Labels of every prefix of ``steps``: measured where known, inferred elsewhere.

    With ``a`` the nearest known value before step k (the root's MC at worst) and
    ``b`` the nearest known after: ``0`` if ``a = 0`` (a wrong step is never undone);
    else ``b`` if ``b > 0`` (the path can still succeed); else ``a``. So the implied
    first wrong step is always a measured zero (or the wrong answer itself).
    """
    steps = tuple(steps)
    root = self.nodes.get(())
    if root is None:
      raise ValueError(f"problem {self.view.key}: the root was never evaluated")
    known = [self.known_outcomes(steps[:k + 1]) for k in range(len(steps))]
    values = [None if o is None else o.count("1") / len(o) for o in known]
    labels = []
    for k, value in enumerate(values):
      if value is None:
        before = next((values[j] for j in range(k - 1, -1, -1) if values[j] is not None), root.mc)
        after = next((values[j] for j in range(k + 1, len(values)) if values[j] is not None), None)
        value = 0.0 if before == 0.0 else (after if after is not None and after > 0 else before)
      labels.append(value)
    outcomes = tuple(o or "" for o in known)
    return StepLabels(prompt=self.view.prompt, steps=steps, labels=tuple(labels),
                      successes=tuple(o.count("1") for o in outcomes),
                      totals=tuple(len(o) for o in outcomes), outcomes=outcomes, method=method)

  def state_labels(self) -> list[StepLabels]:
    """Flat per-prefix labels: one per evaluated state below the root."""
    return [self.labels_for(node.steps) for node in self._by_id if node.steps]

  def truncated(self, budget: int) -> SearchTree:
    """The tree as it stood when ``budget`` completions had been spent (labels only).

    States are added in search order and selection is deterministic, so this is the
    tree a run with ``rollout_budget = budget`` would have built from the same
    completions (the pool and searches are not rebuilt).
    """
    view, spent = SearchTree(self.problem, self.config, self.separator, task=self.view.task,
                             prompt=self.view.prompt), 0
    for node in self._by_id:
      if spent + node.cost > budget:
        break
      spent += node.cost
      view.nodes[node.steps] = node
      view._by_id.append(node)  # pylint: disable=protected-access
    view.rollouts_spent = spent
    return view

  def parent_of(self, node: Node) -> int | None:
    for length in range(len(node.steps) - 1, -1, -1):
      if node.steps[:length] in self.nodes:
        return self.nodes[node.steps[:length]].id
    return None

  def to_json(self) -> dict:
    """JSON-serializable tree: nodes (with parent ids and rollouts), searches and costs."""
    nodes = [{"id": n.id, "parent": self.parent_of(n), "steps": list(n.steps), "mc": n.mc,
              "successes": n.successes, "total": len(n.rollouts), "cost": n.cost,
              "visits": n.visits,
              "rollouts": [{"text": r.text, "correct": r.correct} for r in n.rollouts]}
             for n in self._by_id]
    return {"problem": self.view.key, "config": dataclasses.asdict(self.config),
            "nodes": nodes, "searches": [dataclasses.asdict(s) for s in self.searches],
            "rollouts_spent": self.rollouts_spent, "cache_hits": self.cache_hits}


def search_task(problem, config: OmegaPRMConfig,
                root_rollouts: Sequence[str] | None = None,
                separator: str = arithmetic.STEP_SEPARATOR, *, task=None,
                prompt: str | None = None) -> Task:
  """Coroutine running OmegaPRM on one problem; returns the :class:`SearchTree`.

  ``root_rollouts`` (completions of the bare prompt, e.g. the solutions to label)
  stand in for the root's k rollouts and are not charged to the budget; without
  them the root is evaluated like any state. Every request is one prefix (steps
  joined by ``separator``) that needs ``config.rollouts_per_state`` completions.
  ``task`` (default arithmetic) judges outcomes; ``prompt`` defaults to
  ``task.prompt(problem)``.
  """
  tree = SearchTree(problem, config, separator, task=task, prompt=prompt)
  if root_rollouts is not None:
    tree.add_state((), list(root_rollouts), cost=0)
  else:
    yield from tree.evaluate(())
  while len(tree.searches) < config.max_searches and tree.pool:
    state, rollout = tree.select()
    finished = yield from tree.binary_search(state, rollout)
    if not finished:
      break
  return tree


def run_search(problems: Sequence, completer: Completer,
               config: OmegaPRMConfig = OmegaPRMConfig(), *, rng,
               root_rollouts: Sequence[Sequence[str]] | None = None,
               separator: str = arithmetic.STEP_SEPARATOR, task=None,
               prompts: Sequence[str] | None = None) -> list[SearchTree]:
  """OmegaPRM on many problems in lockstep: each round's MC evaluations go out as one
  completer call with ``k`` completions per prefix (``prompts[i]``, default
  ``task.prompt(problem)``, then steps joined by ``separator``, any string). ``task``
  (default: the arithmetic task) judges outcomes. Returns one tree per problem."""
  if root_rollouts is not None and len(root_rollouts) != len(problems):
    raise ValueError(f"{len(root_rollouts)} root rollout lists for {len(problems)} problems")
  views = step_views(problems, separator, task, prompts)
  tasks = [search_task(v.problem, config, None if root_rollouts is None else root_rollouts[i],
                       separator, task=v.task, prompt=v.prompt) for i, v in enumerate(views)]
  return completer_lib.drive(tasks, completer, config.rollouts_per_state, rng)

"""The experiment scripts on a device mesh: `experiments/rl.py --config.mesh_shape=...` from the
command line, the RL step across two `jax.distributed` processes, and `tts.py` /
`label_steps.py` with `mesh_shape`, each against the single-device run."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import rl_grpo
from rewardlab.rl import run as rl_run
from rewardlab.train import sft

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 2-step GRPO run of the tiny random policy. The random policy earns no verifier reward
# (all advantages 0); the entropy bonus moves the parameters all the same. 2 update
# groups x 4 samples split over the 4 data shards of (2, 2, 2) and the 8 of (8, 1, 1).
RL_OVERRIDES = {"train.steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2,
                "rollout.update_groups": 2, "algo.entropy_coef": 0.1, "optim.learning_rate": 1e-3,
                "eval.maj_k": 0}


def rl_cfg(mesh_shape=None, reward: str = "verifier"):
  cfg = rl_grpo.tiny().unlock()
  for key, value in RL_OVERRIDES.items():
    section, name = key.split(".")
    cfg[section][name] = value
  cfg.mesh_shape, cfg.reward.name = mesh_shape, reward
  return cfg.lock()


class LengthScorer:
  """Outcome scorer that prefers short completions, r = 1 - len / 12: the groups' returns
  differ, so the policy-gradient term moves the parameters (not only the entropy bonus)."""

  def score(self, prompts, completions):
    return np.array([1.0 - len(c) / 12 for c in completions], np.float32)


def _leaves(params):
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def _assert_same_params(got, want, atol=2e-5):
  got_flat = jax.tree_util.tree_flatten_with_path(got)[0]
  want_flat = jax.tree_util.tree_flatten_with_path(want)[0]
  assert [p for p, _ in got_flat] == [p for p, _ in want_flat]
  for (path, a), (_, b) in zip(got_flat, want_flat):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


def _single_device_policy(workdir, cfg, **scorers):
  """The policy after the single-device run of `cfg` (in this process)."""
  result = rl_run.run(cfg, str(workdir), **scorers)
  assert result["steps"] == 2
  params = sft.load_policy(result["policy_dir"])[1]
  initial = rl_run.load_policy(cfg, 64)[1]
  moved = max(float(np.abs(a - b).max()) for a, b in zip(_leaves(params), _leaves(initial)))
  assert moved > 1e-4  # well above the tolerance: the comparisons can fail
  return params


@pytest.fixture(scope="module")
def single_device_rl(tmp_path_factory):
  return _single_device_policy(tmp_path_factory.mktemp("rl_single"), rl_cfg())


@pytest.mark.slow  # two subprocesses import JAX and compile (~40 s on the loaded 2-core CPU)
def test_rl_command_line_on_a_mesh_ends_with_the_single_device_parameters(
    single_device_rl, tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  workdir = tmp_path / "mesh"
  command = [sys.executable, os.path.join(REPO, "experiments", "rl.py"),
             "--config", os.path.join(REPO, "experiments", "configs", "rl_grpo.py") + ":tiny",
             f"--workdir={workdir}", "--config.mesh_shape=(2,2,2)"]
  command += [f"--config.{key}={value}" for key, value in RL_OVERRIDES.items()]
  proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  _assert_same_params(sft.load_policy(str(workdir / "policy"))[1], single_device_rl)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # two processes import JAX and compile (~60 s on the loaded 2-core CPU)
def test_two_process_rl_equals_the_single_process_run(tmp_path):
  """Two localhost `jax.distributed` processes of 2 CPU devices each, mesh (2, 1, 2) with
  the data axis across them: each samples and scores its share of the prompts, and two
  RL steps end with the parameters of the single-device run."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  worker = os.path.join(REPO, "tests", "multihost_rl_worker.py")
  workdir = tmp_path / "two_process"
  procs = [subprocess.Popen([sys.executable, worker, str(port), str(i), str(workdir)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=540)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  finals = [out.split("final", 1)[1].strip() for out in outputs]
  assert finals[0] == finals[1]  # both processes evaluated the same policy
  # One process writes the metrics files: each step once, not once per process.
  steps = [json.loads(l)["step"] for l in open(workdir / "train_metrics.jsonl")]
  assert steps == sorted(set(steps)) and steps[-1] == 2, steps
  evals = [json.loads(l)["step"] for l in open(workdir / "eval_metrics.jsonl")]
  assert evals == sorted(set(evals)), evals
  single = _single_device_policy(tmp_path / "single", rl_cfg(reward="outcome_rm"),
                                 outcome_scorer=LengthScorer())
  _assert_same_params(sft.load_policy(str(workdir / "policy"))[1], single)


# --------------------------------------------------------------------------- tts, label_steps


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
  """A tiny random policy and tiny random outcome / process reward models, saved as the
  experiments save them (character tokenizer)."""
  from experiments.configs import sft as sft_config
  from rewardlab import models
  from rewardlab.data.tokenizers import CharTokenizer
  from rewardlab.models import reward
  root = tmp_path_factory.mktemp("models")
  tok = CharTokenizer.for_arithmetic()
  config = sft.model_config(sft_config.tiny(), tok)
  sft.save_policy(str(root / "policy"), config, models.init_params(config, jax.random.key(0)), tok)
  for i, head in enumerate(("outcome", "process")):
    rm = reward.RewardModelConfig(backbone=config, head=head)
    reward.save_reward_model(str(root / head), rm,
                             reward.init_reward_model(rm, jax.random.key(i + 1)), tok)
  return root


def _tts_cfg(root, mesh_shape):
  from experiments.configs import tts as tts_config
  cfg = tts_config.tiny().unlock()
  cfg.policy_dir, cfg.mesh_shape = str(root / "policy"), mesh_shape
  cfg.reward.outcome_dir, cfg.reward.process_dir = str(root / "outcome"), str(root / "process")
  cfg.methods = ("majority", "best_of_n", "weighted_best_of_n", "beam_search")
  return cfg.lock()


@pytest.mark.slow  # two tts runs, each compiling the sampler and two reward models
def test_tts_on_a_mesh_equals_the_single_device_run(saved_models, tmp_path):
  """Sampling and reward-model scoring sharded over (2, 2, 2): the same curves (answers
  selected, accuracies, tokens generated and scored) as on one device."""
  from rewardlab.train import tts
  single = tts.run(_tts_cfg(saved_models, None), str(tmp_path / "single"))
  sharded = tts.run(_tts_cfg(saved_models, (2, 2, 2)), str(tmp_path / "mesh"))
  assert single["skipped"] == sharded["skipped"] == {}
  assert set(single["methods"]) == {"majority", "best_of_n", "weighted_best_of_n",
                                    "beam_search"}
  for name, want in single["methods"].items():
    got = sharded["methods"][name]
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float),
                                 atol=1e-6, err_msg=f"{name}/{key}")
  assert single["pass@n"] == sharded["pass@n"]


def test_reward_scorers_on_a_mesh_equal_the_single_device_ones(saved_models):
  from rewardlab.models import reward
  mesh = rewardlab_mesh((2, 2, 2))
  prompts = ["Q:3+4*2=\n", "Q:5*5+1=\n", "Q:1+1*9=\n"]
  texts = ["3+4=7\n7*2=14\nA:14", "5*5=25\nA:26", "A:9"]
  steps = [t.split("\n") for t in texts]
  for head in ("outcome", "process"):
    plain = reward.load_reward_model(str(saved_models / head))
    placed = reward.load_reward_model(str(saved_models / head), mesh=mesh)
    if head == "outcome":
      want = reward.sequence_scorer(*plain).score(prompts, texts)
      got = reward.sequence_scorer(*placed, mesh=mesh).score(prompts, texts)
      np.testing.assert_allclose(got, want, atol=1e-5)
      assert np.ptp(want) > 0  # distinct scores: a row mix-up would show
    else:
      want = reward.ProcessScorer(*plain).score_steps(prompts, steps)
      got = reward.ProcessScorer(*placed, mesh=mesh).score_steps(prompts, steps)
      for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def rewardlab_mesh(shape):
  from rewardlab import sharding
  return sharding.make_mesh(shape)


def _label_cfg(root, mesh_shape):
  from experiments.configs import label_steps as label_config
  cfg = label_config.tiny().unlock()
  cfg.completer, cfg.policy_dir, cfg.mesh_shape = "policy", str(root / "policy"), mesh_shape
  cfg.data.num_problems, cfg.task.num_ops, cfg.problems_per_batch = 2, (2,), 2
  cfg.num_solutions, cfg.mc.num_completions, cfg.mc.quality_levels = 2, 2, (1, 2)
  cfg.omegaprm.rollouts_per_state, cfg.omegaprm.rollout_budget = 2, 8
  cfg.omegaprm.quality_levels = (4,)
  cfg.sampling.max_new_tokens, cfg.sampling.batch_size = 16, 2
  return cfg.lock()


@pytest.mark.slow  # two labelling runs, each compiling the sampler at several prefix widths
def test_label_steps_on_a_mesh_equals_the_single_device_run(saved_models, tmp_path):
  """The policy completer sharded over (8, 1, 1): the same solutions and step labels."""
  from rewardlab.train import label_steps
  single = label_steps.run(_label_cfg(saved_models, None), str(tmp_path / "single"))
  sharded = label_steps.run(_label_cfg(saved_models, (8, 1, 1)), str(tmp_path / "mesh"))
  labels = sorted(f for f in os.listdir(tmp_path / "single") if f.startswith("labels_"))
  assert labels and labels == sorted(f for f in os.listdir(tmp_path / "mesh")
                                     if f.startswith("labels_"))
  for name in labels:
    assert ((tmp_path / "mesh" / name).read_text() == (tmp_path / "single" / name).read_text())
  assert single["num_solutions"] == sharded["num_solutions"] == 4

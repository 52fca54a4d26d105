"""The experiment scripts on a device mesh: `experiments/rl.py --config.mesh_shape=...` from the
command line, the RL step across two `jax.distributed` processes, and `tts.py` /
`label_steps.py` with `mesh_shape`, each against the single-device run."""
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
  single = _single_device_policy(tmp_path / "single", rl_cfg(reward="outcome_rm"),
                                 outcome_scorer=LengthScorer())
  _assert_same_params(sft.load_policy(str(workdir / "policy"))[1], single)

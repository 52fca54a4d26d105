"""The experiment scripts on a device mesh: `experiments/rl.py --config.mesh_shape=...` from the
command line, the RL step across two `jax.distributed` processes, and `tts.py` /
`label_steps.py` with `mesh_shape`, each against the single-device run."""
import os
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


def _rl_cfg(mesh_shape=None):
  cfg = rl_grpo.tiny().unlock()
  for key, value in RL_OVERRIDES.items():
    section, name = key.split(".")
    cfg[section][name] = value
  cfg.mesh_shape = mesh_shape
  return cfg.lock()


def _leaves(params):
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def _assert_same_params(got, want, atol=2e-5):
  got_flat = jax.tree_util.tree_flatten_with_path(got)[0]
  want_flat = jax.tree_util.tree_flatten_with_path(want)[0]
  assert [p for p, _ in got_flat] == [p for p, _ in want_flat]
  for (path, a), (_, b) in zip(got_flat, want_flat):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def single_device_rl(tmp_path_factory):
  """The policy after the single-device run of `_rl_cfg()` (in this process)."""
  workdir = tmp_path_factory.mktemp("rl_single")
  result = rl_run.run(_rl_cfg(), str(workdir))
  assert result["steps"] == 2
  params = sft.load_policy(result["policy_dir"])[1]
  initial = rl_run.load_policy(_rl_cfg(), 64)[1]
  moved = max(float(np.abs(a - b).max()) for a, b in zip(_leaves(params), _leaves(initial)))
  assert moved > 1e-4  # well above the tolerance: the comparisons can fail
  return params


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

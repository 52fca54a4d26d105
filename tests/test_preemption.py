"""Real processes, real signals: the experiment scripts at tiny sizes.

* SIGKILL at a random moment, then the same command again, gives byte-identical outputs
  (reward-model trainer and RL).
* SIGTERM: the current step is checkpointed, one line says so, the exit status is 143
  within seconds; a second SIGTERM exits at once.
* A resume with a changed config fails naming the field and both values; `train.steps`
  may grow when the schedule is stated explicitly.
* The console shows our lines only (no absl / orbax INFO chatter).

The runs share a JAX compilation cache so that only the first one compiles.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

RM_CONFIG = """
from experiments.configs import rm_bt
def get_config():
  c = rm_bt.tiny().unlock()
  c.train.steps, c.train.checkpoint_every, c.train.log_every = 12, 4, 1
  c.train.schedule_steps = 12
  return c.lock()
"""
RL_CONFIG = """
from experiments.configs import rl_grpo
def get_config():
  c = rl_grpo.tiny().unlock()
  c.train.steps, c.train.checkpoint_every, c.train.eval_every = 6, 2, 2
  return c.lock()
"""
LIBRARY_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d\d", re.M)  # absl's INFO line prefix


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = tmp_path_factory.mktemp("jax_cache")
  return {**os.environ, "PYTHONPATH": REPO, "JAX_COMPILATION_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "XLA_FLAGS": ""}


def _command(script, config_path, workdir, *flags):
  return [sys.executable, os.path.join(REPO, "experiments", script), f"--config={config_path}",
          f"--workdir={workdir}", *flags]


def _run(env, *args, **kwargs):
  return subprocess.run(_command(*args, **kwargs), env=env, capture_output=True, text=True,
                        timeout=300)


def _config(tmp_path, text, name):
  path = tmp_path / f"{name}.py"
  path.write_text(text)
  return str(path)


def _kill_at_random(env, args, marker, rng, window):
  """Start the script, SIGKILL it `uniform(0, window)` s after `marker` exists."""
  proc = subprocess.Popen(_command(*args), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  delay = rng.uniform(0.0, window)
  time.sleep(delay)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  return delay


def _metrics(path, drop=("tokens_per_s", "sample_seconds", "step_seconds", "eval/elapsed_s")):
  return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in open(path)]


@pytest.mark.parametrize("script,config,outputs", [
    ("train_rm.py", RM_CONFIG, ("reward_model/model.safetensors",
                                "reward_model/head.safetensors")),
    ("rl.py", RL_CONFIG, ("policy/model.safetensors",)),
])
def test_sigkill_at_a_random_moment_then_rerun_gives_identical_outputs(tmp_path, env, script,
                                                                       config, outputs):
  cfg = _config(tmp_path, config, "cfg")
  full = _run(env, script, cfg, tmp_path / "full")
  assert full.returncode == 0, full.stderr[-3000:]
  rng = random.Random()
  run = tmp_path / "killed"
  delays = [_kill_at_random(env, (script, cfg, run), run / "checkpoints", rng, 3.0)]
  resumed = _run(env, script, cfg, run)
  assert resumed.returncode == 0, (delays, resumed.stderr[-3000:])
  for name in outputs:
    assert (tmp_path / "full" / name).read_bytes() == (run / name).read_bytes(), (name, delays)
  assert _metrics(tmp_path / "full" / "train_metrics.jsonl") == _metrics(
      run / "train_metrics.jsonl"), delays


def _wait_for_lines(path, count, proc, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and sum(1 for _ in open(path)) >= count:
      return
    time.sleep(0.05)
  raise AssertionError(f"{path} did not reach {count} lines (exit {proc.poll()})")


def test_sigterm_saves_the_current_step_and_a_changed_config_is_refused(tmp_path, env):
  cfg = _config(tmp_path, RM_CONFIG.replace("= 12, 4, 1", "= 400, 0, 1"), "long")
  run = tmp_path / "run"
  proc = subprocess.Popen(_command("train_rm.py", cfg, run), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _wait_for_lines(run / "train_metrics.jsonl", 3, proc)
  start = time.time()
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=60)
  seconds = time.time() - start
  assert proc.returncode == 143, stderr[-3000:]
  assert seconds < 10, seconds
  stopped = re.findall(r"stopped at step (\d+) of 400", stderr)
  assert len(stopped) == 1, stderr
  step = int(stopped[0])
  steps = [json.loads(line)["step"] for line in open(run / "train_metrics.jsonl")]
  assert steps == list(range(1, step + 1))
  assert [d for d in os.listdir(run / "checkpoints") if d.isdigit()] == [str(step)]
  assert not LIBRARY_INFO.search(stderr), stderr  # quiet by default
  assert len(re.findall(r"checkpoint: step \d+ saved", stderr)) == 1

  changed = _run(env, "train_rm.py", cfg, run, "--config.train.batch_size=16")
  assert changed.returncode != 0
  assert "train.batch_size: 8 -> 16" in changed.stderr, changed.stderr[-3000:]
  longer = _run(env, "train_rm.py", cfg, run, f"--config.train.steps={step + 2}",
                "--verbosity=0")  # the libraries' INFO lines are back
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert LIBRARY_INFO.search(longer.stderr)
  assert json.loads((run / "rm_results.json").read_text())["steps"] == step + 2


def test_a_second_sigterm_exits_at_once(tmp_path, env):
  cfg = _config(tmp_path, RM_CONFIG.replace("= 12, 4, 1", "= 400, 0, 1"), "long")
  run = tmp_path / "run"
  proc = subprocess.Popen(_command("train_rm.py", cfg, run), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _wait_for_lines(run / "train_metrics.jsonl", 2, proc)
  proc.send_signal(signal.SIGTERM)
  time.sleep(0.2)  # two signals before the handler runs would count as one
  proc.send_signal(signal.SIGTERM)
  sent = time.monotonic()
  _, stderr = proc.communicate(timeout=30)
  assert time.monotonic() - sent < 15, stderr[-3000:]
  if "SIGTERM again: exiting now" in stderr:  # the second signal came during the step
    assert proc.returncode == 143, stderr[-3000:]
  else:  # the first stop had already finished its step and left `watch()`: the second
    # signal then has its usual effect on a process that is shutting down
    assert proc.returncode == -signal.SIGTERM and "stopped at step" in stderr, stderr[-3000:]


def test_a_torn_rl_metrics_line_no_longer_blocks_the_run(tmp_path):
  # The reproduction: a run killed after its first checkpoint with half a line
  # left in train_metrics.jsonl (a full disk) used to fail at the plot on every rerun.
  from experiments.configs import rl_grpo
  from rewardlab.rl import run as rl
  cfg = rl_grpo.tiny()
  assert rl.run(cfg, str(tmp_path), stop_after=2) == {"stopped_at": 2}
  path = tmp_path / "train_metrics.jsonl"
  os.truncate(path, path.stat().st_size - 40)
  results = rl.run(cfg, str(tmp_path))
  assert results["steps"] == 4
  assert [json.loads(line)["step"] for line in open(path)] == [1, 3, 4]  # step 2's line was lost
  evals = [json.loads(line) for line in open(tmp_path / "eval_metrics.jsonl")]
  assert [e["step"] for e in evals] == [0, 2, 4]
  elapsed = [e["elapsed_s"] for e in evals]  # continues across the resume, not from zero
  assert elapsed == sorted(elapsed) and elapsed[2] > elapsed[1] > 0
  assert json.loads((tmp_path / "rl_results.json").read_text())["steps"] == 4


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_stop_after_the_same_step_when_one_is_signalled(tmp_path):
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  worker = os.path.join(REPO, "tests", "multihost_preempt_worker.py")
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, worker, str(port), str(i), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 143, out[-3000:]
    assert "stopped at step 3 of 50" in out, out[-3000:]
  assert [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()] == ["3"]

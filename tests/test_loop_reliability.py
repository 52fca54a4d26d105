"""The training loop under preemption, changed configs, torn files and non-finite steps.

A least-squares model small enough that each test takes a few seconds; the signal tests
send a real SIGTERM / SIGINT to this process from inside a train step.
"""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rewardlab.data import pipeline
from rewardlab.train import config_checks, interrupt, loop
from rewardlab.train import metrics as metrics_lib
from rewardlab.train import state as state_lib
from rewardlab.train import step as step_lib

EXAMPLES = [{"x": np.float32([i % 5, 1.0]), "y": np.float32(2.0 * (i % 5) - 1.0)}
            for i in range(40)]
CONFIG = {"train": {"steps": 8, "batch_size": 4, "learning_rate": 0.05, "log_every": 1},
          "progress": False}


def _loss(params, batch):
  pred = batch["x"] @ params["w"]
  return jnp.mean((pred - batch["y"]) ** 2), {}


_STEPS: dict = {}  # one optimizer and jitted step per setting: compiled once per session


def _setup(skip_nonfinite=0):
  if skip_nonfinite not in _STEPS:
    tx = state_lib.adamw(optax.constant_schedule(0.05), clip_norm=0.0,
                         skip_nonfinite=skip_nonfinite)
    _STEPS[skip_nonfinite] = tx, step_lib.make_train_step(_loss, tx)
  tx, step = _STEPS[skip_nonfinite]
  state = state_lib.TrainState.create({"w": jnp.zeros(2)}, tx)
  data = pipeline.make_iterator(EXAMPLES, batch_size=4, seed=0)
  return state, step, data


def _fit(workdir, *, config=CONFIG, total=8, train_step=None, schedule_steps=8, **kwargs):
  state, step, data = _setup()
  return loop.fit(state, train_step or step, data, workdir=str(workdir), total_steps=total,
                  log_every=1, checkpoint_every=3, progress=False,
                  config=config_checks.run_config(config, schedule_steps=schedule_steps),
                  **kwargs)


def _signal_at(step_fn, at: int, signum=signal.SIGTERM, times: int = 1):
  def train_step(state, batch):
    state, metrics = step_fn(state, batch)
    if int(state.step) == at:
      for _ in range(times):
        os.kill(os.getpid(), signum)
    return state, metrics
  return train_step


def _steps(path):
  return [r["step"] for r in metrics_lib.read_jsonl(str(path))]


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_step_saves_it_and_exits_non_zero(tmp_path, signum, code):
  full = _fit(tmp_path / "full")
  _, step, _ = _setup()
  with pytest.raises(interrupt.Interrupted) as stopped:
    _fit(tmp_path / "run", train_step=_signal_at(step, 5, signum))
  assert stopped.value.code == code and "stopped at step 5 of 8" in str(stopped.value)
  assert signal.getsignal(signum) is not interrupt._handler  # handlers restored
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints"))[-1] == "5"
  assert _steps(tmp_path / "run" / "train_metrics.jsonl") == [1, 2, 3, 4, 5]
  resumed = _fit(tmp_path / "run")
  assert resumed.start_step == 5 and resumed.finished
  np.testing.assert_array_equal(resumed.state.params["w"], full.state.params["w"])
  assert _steps(tmp_path / "run" / "train_metrics.jsonl") == list(range(1, 9))


def test_a_resume_with_a_changed_config_names_the_fields_and_both_values(tmp_path):
  _fit(tmp_path, total=4)
  changed = {**CONFIG, "train": {**CONFIG["train"], "batch_size": 16, "learning_rate": 0.1}}
  with pytest.raises(config_checks.ConfigMismatchError,
                     match=r"train.batch_size: 4 -> 16; train.learning_rate: 0.05 -> 0.1"):
    _fit(tmp_path, config=changed)
  # Safe fields may change: logging, progress, the run's length (the schedule is derived).
  longer = {**CONFIG, "progress": True, "train": {**CONFIG["train"], "steps": 8,
                                                  "log_every": 2}}
  assert _fit(tmp_path, config=longer).start_step == 4
  # ... but not a schedule that follows the run's length.
  with pytest.raises(config_checks.ConfigMismatchError, match=r"derived.schedule_steps: 8 -> 12"):
    _fit(tmp_path, total=12, schedule_steps=12)


def test_metrics_are_truncated_to_the_restored_step_and_a_torn_line_dropped(tmp_path):
  _fit(tmp_path, total=3)  # checkpoint at 3
  path = tmp_path / "train_metrics.jsonl"
  with open(path, "a") as f:  # steps 4-5 logged before a crash, the last line torn
    f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n" + '{"step": 5, "lo')
  with open(tmp_path / "eval_metrics.jsonl", "w") as f:
    f.write("".join(json.dumps({"step": s}) + "\n" for s in (0, 0, 3, 4)))
  with pytest.raises(metrics_lib.JsonlError, match=r"train_metrics.jsonl, line 5"):
    metrics_lib.read_jsonl(str(path))
  _fit(tmp_path, total=8)
  assert _steps(path) == list(range(1, 9))
  assert _steps(tmp_path / "eval_metrics.jsonl") == [0, 3]


def test_elapsed_time_continues_across_resumes(tmp_path):
  first = _fit(tmp_path, total=4)
  # The checkpoint records the time at its save; the run ends after writing it, which can
  # take a second on a loaded machine.
  saved = loop.elapsed_at_checkpoint(str(tmp_path))
  assert 0.0 < saved <= first.elapsed_s
  assert first.elapsed_s - saved < max(1.0, 0.5 * first.elapsed_s)
  second = _fit(tmp_path, total=8)
  assert second.elapsed_s > first.elapsed_s
  # It continues from the checkpoint's time; a restart at 0 would leave `saved` out.
  assert second.elapsed_s - second.seconds == pytest.approx(saved, abs=max(0.5, 0.2 * saved))


def _poison_at(step_fn, bad_steps):
  def train_step(state, batch):
    if int(state.step) + 1 in bad_steps:
      batch = {**batch, "y": batch["y"] * jnp.nan}
    return step_fn(state, batch)
  return train_step


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_the_last_good_checkpoint(tmp_path):
  _, step, _ = _setup()
  with pytest.raises(loop.NonFiniteError,
                     match=r"step 5: non-finite .*'loss'.*last good checkpoint: step 3"):
    _fit(tmp_path, train_step=_poison_at(step, {5}))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]


def test_bad_steps_can_be_skipped_and_counted(tmp_path):
  state, step, data = _setup(skip_nonfinite=2)
  clean_state, clean_step, clean_data = _setup(skip_nonfinite=2)
  result = loop.fit(state, _poison_at(step, {2, 6}), data, workdir=str(tmp_path / "a"),
                    total_steps=8, progress=False, max_bad_steps=2)
  assert result.finished and result.bad_steps == 2
  assert np.all(np.isfinite(result.state.params["w"]))
  with pytest.raises(loop.NonFiniteError, match="3 bad step"):
    loop.fit(clean_state, _poison_at(clean_step, {1, 2, 3}), clean_data,
             workdir=str(tmp_path / "b"), total_steps=8, progress=False, max_bad_steps=2)


def test_out_of_range_config_values_are_refused_by_name():
  bad = {"train": {"learning_rate": -1e-4, "batch_size": 0, "steps": 10},
         "data": {"correct_fraction": 1.5}, "rollout": {"group_size": 4}}
  with pytest.raises(config_checks.ConfigValueError) as err:
    config_checks.check_values(bad)
  for text in ("train.learning_rate=-0.0001 (must be > 0)", "train.batch_size=0 (must be > 0)",
               "data.correct_fraction=1.5 (must be in [0, 1])"):
    assert text in str(err.value)
  assert "group_size" not in str(err.value) and "steps" not in str(err.value)


def test_result_json_has_no_bare_nan(tmp_path):
  path = str(tmp_path / "r.json")
  metrics_lib.write_json(path, {"auroc": float("nan"), "v": np.float32("inf"),
                                "a": np.array([1.0, np.nan]), "ok": 0.5})
  text = open(path).read()
  assert json.loads(text) == {"auroc": None, "v": None, "a": [1.0, None], "ok": 0.5}
  assert "NaN" not in text and "Infinity" not in text


def test_a_checkpoint_write_cut_short_leaves_the_previous_step_latest(tmp_path):
  _fit(tmp_path, total=3)
  # What a kill during the write of step 6 leaves: orbax's temporary folder, never renamed.
  torn = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-1733380000000000"
  (torn / "state").mkdir(parents=True)
  (torn / "state" / "half_written").write_bytes(b"\0" * 10)
  resumed = _fit(tmp_path, total=8)
  assert resumed.start_step == 3 and resumed.finished
  assert not torn.exists()
